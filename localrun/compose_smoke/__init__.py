"""The compose smoke: a real Docker engine brings the stack up, serves, takes load, goes down."""
