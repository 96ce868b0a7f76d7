"""The device↔cloud contract: .proto files and their generated Python code."""
