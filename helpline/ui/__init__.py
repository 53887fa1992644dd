"""The Streamlit app: chat for customers, knowledge base and review for staff, models for engineers.

It talks to the gateway over HTTP only (``client.py``) and imports nothing heavier than
``helpline.platform`` and httpx; the gateway checks the caller's role on every call.
"""
