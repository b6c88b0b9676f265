"""Nominal controllers, control-barrier-function rows, the QP safety filter and fallbacks."""
