"""Sample apps, each loaded by path from its main.py (a package only so the architecture can be linted)."""
