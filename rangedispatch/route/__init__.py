"""Routing: the generated eager call, written for the reference's exact signature."""
