"""Writing what ran: the provenance header, the one HTML report writer, atomic files and the
headless-browser check of a report."""
