# Shell helpers shared by the bench scripts (sourced, not run).

# A free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Waits until the engine of PID answers /readyz on PORT; if it exits
# first, prints its LOG and exits the script.
wait_ready() { # pid port log
  until curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$2/readyz"; do
    kill -0 "$1" 2>/dev/null || { cat "$3" >&2; exit 1; }
    sleep 0.1
  done
}
