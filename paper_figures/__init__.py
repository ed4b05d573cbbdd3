"""paper_figures"""
