"""A study: the workflow's runs run resumably, each committed to git with the small files its
tables and reports are built from (`attrrob study run`), and everything shown rebuilt from the
committed folder alone (`attrrob study report`)."""
