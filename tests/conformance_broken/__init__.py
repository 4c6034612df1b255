"""Deliberately broken providers: each breaks one rule of the contract; the suite must catch it.

Every module holds a FakeCloud subclass and a ``factory(config) -> provider``; :data:`BROKEN` maps
a short id to (provider class, the capability to run, the rule the suite must name).
"""
