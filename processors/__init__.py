"""Faust stream processors and the pure analytics they run: candles and indicators."""
