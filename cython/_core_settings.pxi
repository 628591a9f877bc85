# Settings: the core's one table of options (zk_options.c), stored and applied by name.
# Included by _core.pyx.

cdef tuple OPTION_KINDS = ("bytes", "duration", "bool", "choice")


cdef dict describe_option(const zk_option_info *o):
    words = [tuple(w.split("|")) for w in o.words.decode().split(",")] if o.words != NULL else None
    return {"kind": OPTION_KINDS[o.kind], "min": o.min, "max": o.max, "words": words}


#: Every setting, from the core's one table (zk_options.c): name ->
#: {kind: bytes/duration/bool/choice, min, max, words}, words (choices only)
#: the aliases of the values min, min+1, ..., the first how it reads back.
OPTIONS = {zk_options_info[i].name.decode(): describe_option(&zk_options_info[i]) for i in range(ZK_OPT_COUNT)}
cdef dict OPTION_IDS = {name: i for i, name in enumerate(OPTIONS)}

cdef zk_option option_id(str name) except *:
    return <zk_option>OPTION_IDS[name]


def option_store(str name, uint64_t value):
    """Store a setting's value, validated by the caller (zkalloc_np._settings);
    it takes effect with option_apply."""
    if zk_option_set(option_id(name), value) != ZK_OK:
        raise ValueError(f"{name}={value} is out of range")


def option_apply(str name):
    """What a stored change does now (evict to a lower cap, reschedule decay, glibc's tuning)."""
    zk_option_apply(option_id(name))


def option_get(str name):
    return zk_option_get(option_id(name))
