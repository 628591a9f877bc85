"""The command-line tools, apart from the allocator's API: ``run``,
``compare``, ``info`` and the demo (``python -m zkalloc_np COMMAND``, or the
``zkalloc-np`` script), and what they share: the supervisor that starts and
measures a program's process (`process`), the peer allocators (`peers`) and
the sanitizer runtimes kept in a child's environment (`sanitizer`).

Nothing here is imported by ``import zkalloc_np``."""
