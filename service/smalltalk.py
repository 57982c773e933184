"""Fixed replies: the honest "I can't" answers, errors and the handoff. The small-talk intents and their
replies are declared with the other intents in `service.domain`."""
from __future__ import annotations

CAPABILITIES = (
    "I can answer questions about shipping, returns, refunds, payments, warranties and your account, "
    "help you find products, check an order's status, start a return, cancel an order or change its "
    "delivery address, and put you through to a person whenever you like."
)

OUT_OF_SCOPE = "I'm sorry, I can't help with that. " + CAPABILITIES

FALLBACK = (
    "I'm not sure I understood that. Could you rephrase it? You can ask about orders, returns, "
    "shipping, payments or products, or type \"agent\" to talk to a person."
)

EMPTY = "Your message looks empty. What would you like to ask?"
UNREADABLE = "I couldn't read that message. Could you type your question in plain words?"
TRUNCATED = "That was a long message ({length:,} characters), so I read the first part. "
INTERNAL_ERROR = (
    "Sorry, something went wrong on our side. Please try again, or type \"agent\" to reach a person."
)

HANDOFF = (
    "I'm handing this conversation to a member of our support team{reason}. They can see everything "
    "we've discussed and will reply here{hours}. Your ticket number is {ticket}."
)
HANDOFF_WAITING = (
    "A member of our support team has your conversation (ticket {ticket}) and will reply here. "
    "Is there anything you'd like to add for them?"
)

STILL_WITH_A_PERSON = "A member of our support team still has your conversation (ticket {ticket}) and will reply here."

SUGGESTED_QUESTIONS = [
    "How long does standard shipping take?",
    "Can I return an opened item?",
    "A quiet dishwasher under $600",
    "Where is my order?",
    "I want to talk to a person",
]
