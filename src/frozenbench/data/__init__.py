"""Datasets: generators of the mini datasets, download/prepare of the real ones, readers and validators."""
