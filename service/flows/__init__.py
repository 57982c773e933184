"""Service flows: small declarative state machines run by `FlowRunner`.

Each module here may declare a module-level `FLOWS` tuple; `service.domain.default_domain()` finds
them all, so a new flow is one new module (plus its intent examples in the data).
"""
from service.flows.base import Flow, FlowContext, FlowResult, FlowRunner, Refusal, Slot

__all__ = ["Flow", "FlowContext", "FlowResult", "FlowRunner", "Refusal", "Slot"]
