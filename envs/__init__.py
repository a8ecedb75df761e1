"""Gymnasium environments of metasym-control: quadrotor, spring mesh, open quantum system."""
