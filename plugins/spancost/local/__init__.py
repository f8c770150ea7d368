"""Local stand-ins for AWS on loopback: moto's server and a Price List API server.

Only the CLI, the demo and the tests import this; product code never does.
"""
