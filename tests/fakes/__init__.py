"""Real servers on loopback that stand in for the gateway's neighbours in tests."""
