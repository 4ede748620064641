"""The app's pages, each a script `st.navigation` runs after ui/app.py has set the context."""
