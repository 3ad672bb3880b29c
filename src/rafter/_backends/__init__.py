"""Worker-group backends: ``local`` (processes forked from a zygote) and ``ray`` (Ray actors)."""
