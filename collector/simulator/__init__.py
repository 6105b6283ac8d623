"""The built-in Amazon Connect simulator (a real HTTP server, REST-JSON wire format)."""

from __future__ import annotations

from collector.simulator.fleet import Fleet, FleetSpec
from collector.simulator.server import Simulator, SimulatorConfig, running_simulator

__all__ = ["Fleet", "FleetSpec", "Simulator", "SimulatorConfig", "running_simulator"]
