"""Benchmarks (not tests): each prints its figures and, where there is one, a ceiling ratio."""
