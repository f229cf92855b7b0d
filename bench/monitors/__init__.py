"""Lightning callbacks that measure signal propagation during training."""

from bench.monitors.gradient_flow import GradientFlowMonitor, SignalSnapshot
from bench.monitors.jacobian import JacobianSnapshot, JacobianSpectrumMonitor

__all__ = [
    "GradientFlowMonitor",
    "JacobianSnapshot",
    "JacobianSpectrumMonitor",
    "SignalSnapshot",
]
