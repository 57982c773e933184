"""Service flows: small declarative state machines run by `FlowRunner`."""
from service.flows.base import Flow, FlowResult, FlowRunner, Slot
from service.flows.orders import DEFAULT_POLICY, ORDER_FLOWS

__all__ = ["Flow", "FlowResult", "FlowRunner", "Slot", "ORDER_FLOWS", "DEFAULT_POLICY"]
