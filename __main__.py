"""Pulumi entry point for every stack: the program body lives in hybridml/program.py."""
from hybridml.program import main

main()
