"""Version 1 of the Tandem device↔cloud protocol (generated code lives here)."""
