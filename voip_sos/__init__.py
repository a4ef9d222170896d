"""voip-sos: one-key emergency call service for telecom operators (see SPEC.md F1-F13)."""

__version__ = "0.1.0"
