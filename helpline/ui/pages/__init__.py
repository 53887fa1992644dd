"""Page scripts that `st.navigation` runs (not meant to be imported)."""
