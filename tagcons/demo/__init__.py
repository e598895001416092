"""The synthetic demo set (`dataset`) and the `tagcons demo` pipeline (`pipeline`) that runs every stage on it."""

from tagcons.demo.dataset import DemoConfig, DemoSet, make_demo_set
from tagcons.demo.pipeline import DemoReport, DemoRunConfig, run_demo

__all__ = ["DemoConfig", "DemoReport", "DemoRunConfig", "DemoSet", "make_demo_set", "run_demo"]
