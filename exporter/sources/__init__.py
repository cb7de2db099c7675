"""Thin adapters to the outside world (D-Bus, ...). Collectors receive them as arguments."""
