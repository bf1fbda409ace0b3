# Sourced by the proxy benchmarks that start their own backends: the two nginx backends of
# bench/proxy.yaml (127.0.0.1:19001 answers "v1", :19002 "v2"), as the shared anchors
# script starts them, in one nginx worker.
#
#   start_backends DIR    # config, pid and error log in DIR; stop with: kill "$(cat DIR/b.pid)"
start_backends() {
  cat > "$1/backend.conf" <<CONF
worker_processes 1; pid $1/b.pid; error_log $1/b.err; daemon on;
events { worker_connections 8192; }
http { access_log off;
  server { listen 127.0.0.1:19001; location / { return 200 "v1\n"; } }
  server { listen 127.0.0.1:19002; location / { return 200 "v2\n"; } } }
CONF
  nginx -c "$1/backend.conf"
}
