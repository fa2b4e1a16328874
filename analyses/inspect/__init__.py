"""``fmi inspect``: one read prompt under the microscope (compute), its offline circuitsvis page
(figures) and the runner."""
