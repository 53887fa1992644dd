"""The page scripts `st.navigation` runs; not meant to be imported.

Not named ``pages/``: Streamlit would serve a folder of that name by URL on its own, whatever
the role-based navigation registered.
"""
