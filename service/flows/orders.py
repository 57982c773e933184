"""The order flows, declared as data: order status, start a return, cancel an order, change the
delivery address, refund status. Each verifies the customer (order number + the email on the
order) before showing or changing anything. `FLOWS` registers them with the domain
(`service.domain`); the business rules (return window, restocking fee) are `core.config.FlowsConfig`.
"""
from __future__ import annotations

import datetime as dt

from service.flows.base import Flow, FlowContext, Refusal, Slot
from service.flows.slots import (
    email_already_verified,
    extract_address,
    extract_condition,
    extract_email,
    extract_order_id,
    validate_email,
    validate_order_id,
)
from service.store import Order

NOT_SHIPPED = ("placed", "processing")

ORDER_ID_SLOT = Slot("order_id", "What's your order number? It looks like HC-123456 and is in your confirmation email.",
                     extract_order_id, validate_order_id, max_attempts=3)
EMAIL_SLOT = Slot("email", "To keep your order private, what's the email address you used for it?",
                  extract_email, validate_email, skip=email_already_verified, max_attempts=2, verifies=True)


def _date(value: str | None) -> str:
    if not value:
        return "an unknown date"
    d = dt.date.fromisoformat(value[:10])
    return f"{d:%B} {d.day}, {d.year}"


def _items(order: Order) -> str:
    return ", ".join(f"{i.title}" + (f" (x{i.qty})" if i.qty > 1 else "") for i in order.items) or "your items"


def describe_status(order: Order) -> str:
    s = order.status
    if s in NOT_SHIPPED:
        return (f"Order {order.order_id} ({_items(order)}) was placed on {_date(order.placed_at)} and is being "
                "prepared; it hasn't shipped yet. Orders usually leave our warehouse within 1-2 business days.")
    if s == "shipped":
        return (f"Order {order.order_id} shipped on {_date(order.shipped_at)} with {order.carrier or 'our carrier'}"
                f"{f', tracking number {order.tracking}' if order.tracking else ''}. Standard delivery takes "
                "3-5 business days from shipping.")
    if s == "delivered":
        return f"Order {order.order_id} ({_items(order)}) was delivered on {_date(order.delivered_at)}."
    if s == "cancelled":
        return f"Order {order.order_id} was cancelled. {describe_refund(order)}"
    if s == "returned":
        return f"Order {order.order_id} was returned. {describe_refund(order)}"
    if s == "return_requested":
        return (f"A return is open for order {order.order_id}. Once we receive the item, the refund reaches your "
                "original payment method within 5-10 business days.")
    return f"Order {order.order_id} is {s.replace('_', ' ')}."


def describe_refund(order: Order) -> str:
    if order.refund_status == "issued":
        return f"The refund of ${order.total:,.2f} has been issued to your original payment method."
    if order.refund_status == "pending":
        return (f"The refund for order {order.order_id} is being processed; it reaches your original payment "
                "method within 5-10 business days.")
    if order.status == "return_requested":
        return "Your return is open; the refund is issued within 5-10 business days after we receive the item."
    return f"There is no refund on order {order.order_id}: it hasn't been cancelled or returned."


# -- returns ---------------------------------------------------------------------------------
def _return_days_left(ctx: FlowContext, order: Order) -> int | None:
    if not order.delivered_at:
        return None
    delivered = dt.date.fromisoformat(order.delivered_at[:10])
    return ctx.policy.return_window_days - (ctx.today - delivered).days


def check_return(ctx: FlowContext) -> Refusal | None:
    order = ctx.order
    if order.status in ("returned", "return_requested"):
        return Refusal(f"Order {order.order_id} already has a return. {describe_refund(order)}", handoff=False)
    if order.status in NOT_SHIPPED + ("shipped",):
        return Refusal(f"Order {order.order_id} hasn't been delivered yet, so a return can't start. "
                       + ("You can cancel it instead, since it hasn't shipped." if order.status in NOT_SHIPPED
                          else f"Once it arrives you'll have {ctx.policy.return_window_days} days to return it."),
                       handoff=False)
    if order.status != "delivered":
        return Refusal(f"Order {order.order_id} is {order.status}, so it can't be returned.", handoff=False)
    left = _return_days_left(ctx, order)
    if left is not None and left < 0:
        return Refusal(f"Order {order.order_id} was delivered on {_date(order.delivered_at)}, which is outside our "
                f"{ctx.policy.return_window_days}-day return window. I've asked a member of our team to "
                "review it; defective items may still be covered by the warranty.")
    return None


def _refund(ctx: FlowContext) -> tuple[float, float]:
    order = ctx.order
    fee_rate = ctx.policy.restocking_fee if ctx.slots["condition"] == "opened" else 0.0
    fee = round(order.total * fee_rate, 2)
    return fee, round(order.total - fee, 2)


def confirm_return(ctx: FlowContext) -> str:
    fee, amount = _refund(ctx)
    fee_text = (f" Because it has been opened, a {ctx.policy.restocking_fee:.0%} restocking fee "
                f"(${fee:,.2f}) applies." if fee else "")
    return (f"I can start a return for order {ctx.order.order_id} ({_items(ctx.order)}).{fee_text} You'd get "
            f"${amount:,.2f} back to your original payment method. Shall I go ahead? (yes/no)")


def finish_return(ctx: FlowContext) -> str:
    fee, amount = _refund(ctx)
    # Conditional on the order still being delivered, and one open return per order (the store enforces both).
    rid = ctx.store.create_return(ctx.order.order_id, ctx.slots["condition"], fee, amount,
                                  expect_status=("delivered",))
    return (f"Done: return R-{rid:05d} is open for order {ctx.order.order_id}. We've emailed a prepaid return "
            f"label to the address on the order; your refund of ${amount:,.2f} is issued within 5-10 business "
            "days after we receive the item.")


# -- cancel and change address ----------------------------------------------------------------
def check_cancel(ctx: FlowContext) -> Refusal | None:
    order = ctx.order
    if order.status == "cancelled":
        return Refusal(f"Order {order.order_id} is already cancelled. {describe_refund(order)}", handoff=False)
    if order.status not in NOT_SHIPPED:
        return Refusal(f"Order {order.order_id} has already {'shipped' if order.status == 'shipped' else order.status}, "
                "so it can't be cancelled. Once it arrives you can return it within "
                f"{ctx.policy.return_window_days} days; I've also asked a member of our team to look at it.")
    return None


def finish_cancel(ctx: FlowContext) -> str:
    ctx.store.update_order(ctx.order.order_id, expect_status=NOT_SHIPPED, status="cancelled", refund_status="pending")
    return (f"Order {ctx.order.order_id} is cancelled. The refund of ${ctx.order.total:,.2f} goes back to your "
            "original payment method within 5-10 business days.")


def check_address_change(ctx: FlowContext) -> Refusal | None:
    order = ctx.order
    if order.status not in NOT_SHIPPED:
        return Refusal(f"Order {order.order_id} has already {'shipped' if order.status == 'shipped' else order.status}, "
                "so its delivery address can't be changed here. I've asked a member of our team to check "
                "with the carrier.")
    return None


def finish_address_change(ctx: FlowContext) -> str:
    ctx.store.update_order(ctx.order.order_id, expect_status=NOT_SHIPPED, shipping_address=ctx.slots["new_address"])
    return f"Done: order {ctx.order.order_id} will be delivered to {ctx.slots['new_address']}."


FLOWS: tuple[Flow, ...] = (
    Flow("order_status", intent="order_status", action="order_status", title="checking your order status",
         slots=(ORDER_ID_SLOT, EMAIL_SLOT), finish=lambda ctx: describe_status(ctx.order)),
    Flow("start_return", intent="return_request", action="start_return", title="starting your return",
         slots=(ORDER_ID_SLOT, EMAIL_SLOT,
                Slot("condition", "Is the item still unopened in its original packaging? (yes/no; tell me if it's "
                                  "defective)", extract_condition)),
         check=check_return, confirm=confirm_return, finish=finish_return),
    Flow("cancel_order", intent="cancel_order", action="cancel_order", title="cancelling your order",
         slots=(ORDER_ID_SLOT, EMAIL_SLOT), check=check_cancel,
         confirm=lambda ctx: (f"Cancel order {ctx.order.order_id} ({_items(ctx.order)}, ${ctx.order.total:,.2f})? "
                              "(yes/no)"),
         finish=finish_cancel),
    Flow("change_address", intent="change_address", action="change_address", title="changing your delivery address",
         slots=(ORDER_ID_SLOT, EMAIL_SLOT,
                Slot("new_address", "What's the new delivery address (street and number, city, ZIP)?",
                     extract_address)),
         check=check_address_change,
         confirm=lambda ctx: (f"Change the delivery address of order {ctx.order.order_id} to "
                              f"\"{ctx.slots['new_address']}\"? (yes/no)"),
         finish=finish_address_change),
    Flow("refund_status", intent="refund_status", action="refund_status", title="checking your refund",
         slots=(ORDER_ID_SLOT, EMAIL_SLOT), finish=lambda ctx: describe_refund(ctx.order)),
)
