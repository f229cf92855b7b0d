"""Lightning callbacks that measure signal propagation during training."""

from bench.monitors.gradient_flow import GradientFlowMonitor, SignalSnapshot

__all__ = ["GradientFlowMonitor", "SignalSnapshot"]
