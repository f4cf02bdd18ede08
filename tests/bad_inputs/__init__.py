"""The bad-input corpus, one module per kind of input (see ``case.py`` for what every case asserts).

A kind's module defines ``KIND`` and ``CASES`` (name -> builder); several modules may share a kind.
``tests/test_bad_inputs.py`` runs them all and the terminal summary counts them by kind.
"""
