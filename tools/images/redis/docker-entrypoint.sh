#!/bin/sh
# The public image's redis-server is built with protected mode off (it would
# refuse every client but loopback without a password, and a container's
# clients never are loopback); Debian's is not, so it is switched off here.
if [ "${1:-}" = redis-server ]; then
    shift
    set -- redis-server "$@" --protected-mode no
fi
exec "$@"
