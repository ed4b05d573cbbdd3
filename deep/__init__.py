"""deep"""
