"""The ``pipejupyter`` command line and its console demo: parse, call the core, print.

May import every core layer; no other face.
"""
