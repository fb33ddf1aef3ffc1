#!/usr/bin/env bash
# Local Apache Kafka for sigflow: one KRaft broker+controller in the background, no Docker,
# no Python. sigflow.stack.kafka.KafkaBroker calls this script, so it is the one place that
# knows how to fetch, format, start and stop Kafka.
#
#   kafka.sh fetch    resolve the Kafka jars from Maven Central into the jar cache (needs mvn)
#   kafka.sh start    fetch if needed, format storage once, start in the background and wait
#                     until clients can connect; a broker that dies or hangs is reported with
#                     its last log lines and the script exits non-zero
#   kafka.sh stop     SIGTERM, up to KAFKA_STOP_TIMEOUT s for a clean exit, then SIGKILL;
#                     stopping a broker that is not running is fine
#   kafka.sh status   exit 0 when the broker of KAFKA_DATA_DIR runs, 1 when it does not
#
# Environment (all optional):
#   KAFKA_VERSION          Apache Kafka release                       4.4.0
#   KAFKA_PORT             client (PLAINTEXT) port on 127.0.0.1         9092
#   KAFKA_CONTROLLER_PORT  KRaft controller port on 127.0.0.1           9093
#   KAFKA_DATA_DIR         storage, cluster id, pid file and log        ${SIGFLOW_DATA_DIR:-~/.local/share/sigflow}/kafka
#   KAFKA_LIBS_DIR         jar cache                                    <this dir>/libs/$KAFKA_VERSION
#   KAFKA_START_TIMEOUT    seconds to wait for the broker to be ready   60
#   KAFKA_STOP_TIMEOUT     seconds to wait for a clean exit             30
#   KAFKA_HEAP_OPTS        JVM heap options                             -Xmx1g
#   JAVA_HOME              Java 17+ to use instead of `java` on PATH
#
# A second client listener with TLS and SASL (tests of secure connections), off by default:
#   KAFKA_SASL_SSL_PORT    SASL_SSL port on 127.0.0.1 (empty: no such listener)
#   KAFKA_SSL_KEYSTORE     PEM file: the broker's PKCS#8 private key (unencrypted) and its
#                          certificate chain; required with KAFKA_SASL_SSL_PORT
#   KAFKA_SASL_USERS       space-separated name:password pairs; each user may log in with
#                          PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512. SCRAM users are written when
#                          storage is formatted, i.e. on the first start of a data dir only.
#                          Names and passwords: letters, digits and . _ ~ - only.
#
# Exit status: 0 done, 1 the broker failed (details on stderr), 2 a missing tool or bad setting.
#
# KAFKA_DATA_DIR holds: server.properties (rendered from server.properties.template on every
# start), cluster.id, storage/ (log.dirs), kafka.pid, kafka.log and kafka.log.1 (previous run).

set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
KAFKA_VERSION="${KAFKA_VERSION:-4.4.0}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
KAFKA_DATA_DIR="${KAFKA_DATA_DIR:-${SIGFLOW_DATA_DIR:-$HOME/.local/share/sigflow}/kafka}"
KAFKA_LIBS_DIR="${KAFKA_LIBS_DIR:-$HERE/libs/$KAFKA_VERSION}"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-60}"
KAFKA_STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xmx1g}"
KAFKA_SASL_SSL_PORT="${KAFKA_SASL_SSL_PORT:-}"
KAFKA_SSL_KEYSTORE="${KAFKA_SSL_KEYSTORE:-}"
KAFKA_SASL_USERS="${KAFKA_SASL_USERS:-}"
JAVA="${JAVA_HOME:+$JAVA_HOME/bin/}java"
READY_LINE="Kafka Server started"
LOG_TAIL_LINES=30

info() { printf 'kafka.sh: %s\n' "$*"; }
warn() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() {
    local code="$1"
    shift
    warn "$*"
    exit "$code"
}

usage() {
    printf 'usage: %s fetch|start|stop|status\n' "$(basename "$0")" >&2
    exit 2
}

now() {
    local t="${EPOCHREALTIME:-$SECONDS}"
    printf '%s' "${t/,/.}" # some locales write a decimal comma
}
elapsed_since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

check_settings() {
    local name value
    for name in KAFKA_PORT KAFKA_CONTROLLER_PORT; do
        value="${!name}"
        [[ "$value" =~ ^[0-9]+$ ]] && ((value >= 1 && value <= 65535)) \
            || die 2 "$name=$value is not a TCP port (1-65535)"
    done
    [[ "$KAFKA_PORT" != "$KAFKA_CONTROLLER_PORT" ]] \
        || die 2 "KAFKA_PORT and KAFKA_CONTROLLER_PORT must differ (both are $KAFKA_PORT)"
    for name in KAFKA_START_TIMEOUT KAFKA_STOP_TIMEOUT; do
        [[ "${!name}" =~ ^[0-9]+$ ]] || die 2 "$name=${!name} is not a whole number of seconds"
    done
    [[ "$KAFKA_VERSION" =~ ^[0-9A-Za-z.+-]+$ ]] || die 2 "KAFKA_VERSION=$KAFKA_VERSION is not a version"
    [[ -z "$KAFKA_SASL_SSL_PORT" ]] || check_sasl_ssl_settings
}

check_sasl_ssl_settings() {
    local user
    [[ "$KAFKA_SASL_SSL_PORT" =~ ^[0-9]+$ ]] && ((KAFKA_SASL_SSL_PORT >= 1 && KAFKA_SASL_SSL_PORT <= 65535)) \
        || die 2 "KAFKA_SASL_SSL_PORT=$KAFKA_SASL_SSL_PORT is not a TCP port (1-65535)"
    [[ "$KAFKA_SASL_SSL_PORT" != "$KAFKA_PORT" && "$KAFKA_SASL_SSL_PORT" != "$KAFKA_CONTROLLER_PORT" ]] \
        || die 2 "KAFKA_SASL_SSL_PORT must differ from KAFKA_PORT and KAFKA_CONTROLLER_PORT"
    [[ -n "$KAFKA_SSL_KEYSTORE" ]] || die 2 "KAFKA_SASL_SSL_PORT needs KAFKA_SSL_KEYSTORE (a PEM key + certificate file)"
    [[ -r "$KAFKA_SSL_KEYSTORE" ]] || die 2 "KAFKA_SSL_KEYSTORE=$KAFKA_SSL_KEYSTORE is not a readable file"
    grep -q -- '-----BEGIN PRIVATE KEY-----' "$KAFKA_SSL_KEYSTORE" \
        || die 2 "KAFKA_SSL_KEYSTORE=$KAFKA_SSL_KEYSTORE has no unencrypted PKCS#8 key (BEGIN PRIVATE KEY)"
    [[ -n "${KAFKA_SASL_USERS// /}" ]] || die 2 "KAFKA_SASL_SSL_PORT needs KAFKA_SASL_USERS (name:password ...)"
    for user in $KAFKA_SASL_USERS; do
        [[ "$user" =~ ^[A-Za-z0-9._~-]+:[A-Za-z0-9._~-]+$ ]] \
            || die 2 "KAFKA_SASL_USERS: '${user%%:*}' is not name:password (letters, digits, . _ ~ - only)"
    done
}

set_paths() {
    # Absolute paths: they end up in the broker's command line, which is how status/stop
    # recognise the broker of this data dir.
    mkdir -p "$KAFKA_DATA_DIR"
    DATA_DIR="$(cd "$KAFKA_DATA_DIR" && pwd -P)"
    PROPS="$DATA_DIR/server.properties"
    STORAGE_DIR="$DATA_DIR/storage"
    PID_FILE="$DATA_DIR/kafka.pid"
    LOG_FILE="$DATA_DIR/kafka.log"
    CLUSTER_ID_FILE="$DATA_DIR/cluster.id"
    if [[ -n "$KAFKA_SSL_KEYSTORE" ]]; then
        KAFKA_SSL_KEYSTORE="$(cd "$(dirname "$KAFKA_SSL_KEYSTORE")" && pwd -P)/$(basename "$KAFKA_SSL_KEYSTORE")"
    fi
}

require_java() {
    local version_text major
    if ! command -v "$JAVA" >/dev/null 2>&1; then
        if [[ -n "${JAVA_HOME:-}" ]]; then
            die 2 "java not found at $JAVA (JAVA_HOME=$JAVA_HOME): Kafka $KAFKA_VERSION needs Java 17 or newer"
        fi
        die 2 "java not found on PATH: Kafka $KAFKA_VERSION needs Java 17 or newer" \
            "(e.g. apt-get install openjdk-17-jre-headless, or use the Tansu broker)"
    fi
    version_text="$("$JAVA" -version 2>&1 || true)"
    if [[ "$version_text" =~ version\ \"([0-9]+)(\.([0-9]+))? ]]; then
        major="${BASH_REMATCH[1]}"
        [[ "$major" == 1 ]] && major="${BASH_REMATCH[3]:-0}"
        ((major >= 17)) || die 2 "java $major found ($JAVA), Kafka $KAFKA_VERSION needs Java 17 or newer"
    else
        die 2 "cannot tell the version of $JAVA: ${version_text%%$'\n'*}"
    fi
}

# Serialises start/stop/fetch of one data dir or jar cache; a no-op where flock is missing.
lock() {
    local fd="$1" file="$2"
    command -v flock >/dev/null 2>&1 || return 0
    eval "exec $fd>\"\$file\""
    flock -w 300 "$fd" || die 1 "another kafka.sh holds $file for more than 300 s"
}

fetched() { [[ -f "$KAFKA_LIBS_DIR/.complete" ]]; }

cmd_fetch() {
    fetched && return 0
    command -v mvn >/dev/null 2>&1 \
        || die 2 "mvn not found on PATH: it resolves the Kafka $KAFKA_VERSION jars from Maven Central" \
            "(e.g. apt-get install maven), or put the jars in KAFKA_LIBS_DIR=$KAFKA_LIBS_DIR"
    require_java
    mkdir -p "$(dirname "$KAFKA_LIBS_DIR")"
    KAFKA_LIBS_DIR="$(cd "$(dirname "$KAFKA_LIBS_DIR")" && pwd -P)/$(basename "$KAFKA_LIBS_DIR")"
    lock 8 "$KAFKA_LIBS_DIR.lock"
    fetched && return 0 # another kafka.sh fetched it while we waited for the lock

    local tmp="$KAFKA_LIBS_DIR.tmp.$$" started output
    started="$(now)"
    info "fetching Apache Kafka $KAFKA_VERSION jars from Maven Central into $KAFKA_LIBS_DIR (about 45 MB)"
    rm -rf "$tmp"
    if ! output="$(mvn -q -B -Dstyle.color=never -f "$HERE/pom.xml" dependency:copy-dependencies \
        -Dkafka.version="$KAFKA_VERSION" -DoutputDirectory="$tmp" 2>&1)"; then
        rm -rf "$tmp"
        warn "mvn could not resolve org.apache.kafka:kafka_2.13:$KAFKA_VERSION (no such release, or Maven Central unreachable):"
        printf '%s\n' "$output" | sed $'s/\e\\[[0-9;]*m//g' | tail -n 20 >&2
        exit 1
    fi
    [[ -f "$tmp/kafka_2.13-$KAFKA_VERSION.jar" ]] || {
        rm -rf "$tmp"
        die 1 "mvn finished but kafka_2.13-$KAFKA_VERSION.jar is missing from the download"
    }
    touch "$tmp/.complete"
    rm -rf "$KAFKA_LIBS_DIR"
    mv "$tmp" "$KAFKA_LIBS_DIR"
    exec 8>&- # release the cache lock
    info "fetched $(find "$KAFKA_LIBS_DIR" -name '*.jar' | wc -l | tr -d ' ') jars in $(elapsed_since "$started") s"
}

# True when pid names a live (not zombie) process.
process_alive() {
    local pid="$1" stat state
    kill -0 "$pid" 2>/dev/null || return 1
    if [[ -r "/proc/$pid/stat" ]]; then
        stat="$(<"/proc/$pid/stat")" || return 1
        state="${stat##*) }"
        state="${state%% *}"
    else
        state="$(ps -o stat= -p "$pid" 2>/dev/null)" || return 1
        state="${state// /}"
    fi
    [[ "$state" != Z* && "$state" != X* ]]
}

# True when pid is the broker of this data dir, not a stranger that reused the pid.
is_our_broker() {
    local pid="$1" cmdline
    process_alive "$pid" || return 1
    if [[ -r "/proc/$pid/cmdline" ]]; then
        cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline")" || return 1
    else
        cmdline="$(ps -ww -o args= -p "$pid" 2>/dev/null)" || return 1
    fi
    [[ "$cmdline" == *" kafka.Kafka $PROPS"* ]]
}

# Prints the pid of the running broker of this data dir; false (and no output) otherwise.
running_pid() {
    local pid
    [[ -f "$PID_FILE" ]] || return 1
    pid="$(<"$PID_FILE")" || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] && is_our_broker "$pid" || return 1
    printf '%s' "$pid"
}

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

render_properties() {
    local template listener="" advertised="" user plain_users=""
    template="$(<"$HERE/server.properties.template")"
    if [[ -n "$KAFKA_SASL_SSL_PORT" ]]; then
        listener=",SASL_SSL://127.0.0.1:$KAFKA_SASL_SSL_PORT"
        advertised="$listener"
        for user in $KAFKA_SASL_USERS; do
            plain_users+=" user_${user%%:*}=\"${user#*:}\""
        done
        template+=$'\n'"$(<"$HERE/sasl-ssl.properties.template")"
        template="${template//@KEYSTORE@/"$KAFKA_SSL_KEYSTORE"}"
        template="${template//@PLAIN_USERS@/"$plain_users"}"
    fi
    # Quoted replacements: bash 5.2 would otherwise expand '&' in them (patsub_replacement).
    template="${template//@SASL_SSL_LISTENER@/"$listener"}"
    template="${template//@SASL_SSL_ADVERTISED@/"$advertised"}"
    template="${template//@PORT@/"$KAFKA_PORT"}"
    template="${template//@CONTROLLER_PORT@/"$KAFKA_CONTROLLER_PORT"}"
    template="${template//@STORAGE_DIR@/"$STORAGE_DIR"}"
    printf '%s\n' "$template"
}

java_opts() {
    local heap
    read -r -a heap <<<"$KAFKA_HEAP_OPTS"
    JAVA_OPTS=("${heap[@]}" -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true
        "-Dlog4j2.configurationFile=$HERE/log4j2.yaml" -cp "$KAFKA_LIBS_DIR/*")
}

# What `kafka-storage random-uuid` prints (16 random bytes, URL-safe base64, no padding, no
# leading '-'), without starting a JVM for it.
new_cluster_id() {
    local id
    while :; do
        id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
        if [[ ${#id} -eq 22 && "$id" != -* ]]; then
            printf '%s' "$id"
            return 0
        fi
    done
}

# --add-scram arguments for the formatter: both SCRAM mechanisms for every KAFKA_SASL_USERS user.
scram_args() {
    local user mechanism
    SCRAM_ARGS=()
    [[ -n "$KAFKA_SASL_SSL_PORT" ]] || return 0
    for user in $KAFKA_SASL_USERS; do
        for mechanism in SCRAM-SHA-256 SCRAM-SHA-512; do
            SCRAM_ARGS+=(--add-scram "$mechanism=[name=${user%%:*},password=${user#*:}]")
        done
    done
}

format_storage_once() {
    [[ -f "$STORAGE_DIR/meta.properties" ]] && return 0
    local cluster_id output main
    if [[ -s "$CLUSTER_ID_FILE" ]]; then
        cluster_id="$(<"$CLUSTER_ID_FILE")"
    else
        cluster_id="$(new_cluster_id)"
        printf '%s\n' "$cluster_id" >"$CLUSTER_ID_FILE"
    fi
    java_opts
    scram_args
    for main in kafka.tools.StorageTool org.apache.kafka.tools.StorageTool; do
        # --standalone: this node is the whole controller quorum (KIP-853, Kafka 3.9+).
        if output="$("$JAVA" "${JAVA_OPTS[@]}" "$main" format -t "$cluster_id" -c "$PROPS" \
            --standalone "${SCRAM_ARGS[@]}" 2>&1)"; then
            info "formatted $STORAGE_DIR (cluster id $cluster_id)"
            return 0
        fi
        # The storage tool moved packages across releases; try the other name only for that.
        [[ "$output" == *"Could not find or load main class"* ]] || break
    done
    warn "formatting Kafka storage in $STORAGE_DIR failed:"
    printf '%s\n' "$output" | tail -n 20 >&2
    exit 1
}

tail_log() {
    local causes
    if [[ -s "$LOG_FILE" ]]; then
        # A Java stack trace buries the reason: name the first error and its causes first.
        causes="$(grep -m 1 -E '^\[[^]]*\] (ERROR|FATAL) ' "$LOG_FILE" || true)"
        causes+=$'\n'"$(grep -E '^Caused by: ' "$LOG_FILE" | awk '!seen[$0]++' | head -n 4 || true)"
        if [[ -n "${causes//[[:space:]]/}" ]]; then
            warn "errors in $LOG_FILE:"
            printf '%s\n' "$causes" | sed '/^$/d' >&2
        fi
        warn "last lines of $LOG_FILE:"
        tail -n "$LOG_TAIL_LINES" "$LOG_FILE" >&2
    else
        warn "$LOG_FILE is empty"
    fi
}

# SIGTERM, wait up to $2 s, then SIGKILL; prints how it ended.
terminate() {
    local pid="$1" timeout="$2" started deadline
    started="$(now)"
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + timeout))
    while process_alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
    if process_alive "$pid"; then
        kill -KILL "$pid" 2>/dev/null || true
        deadline=$((SECONDS + 10))
        while process_alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
        process_alive "$pid" && die 1 "pid $pid survived SIGKILL"
        info "killed pid $pid after ${timeout} s without a clean exit"
    else
        info "stopped pid $pid in $(elapsed_since "$started") s"
    fi
}

cmd_start() {
    local pid port launcher=() started deadline rc rendered
    check_settings
    require_java
    cmd_fetch
    set_paths
    lock 9 "$DATA_DIR/.lock"

    rendered="$(render_properties)"
    if pid="$(running_pid)"; then
        if [[ "$rendered" == "$(<"$PROPS")" ]]; then
            info "already running: pid $pid, bootstrap 127.0.0.1:$KAFKA_PORT"
            return 0
        fi
        die 1 "a broker with other settings already runs from $DATA_DIR (pid $pid); run kafka.sh stop first"
    fi
    if [[ -f "$PID_FILE" ]]; then
        # The controller keeps the crashed broker's registration until its session times
        # out (broker.session.timeout.ms, 9 s), so this start takes that much longer.
        info "the previous run did not stop cleanly: start-up may take up to 10 s longer"
        rm -f "$PID_FILE"
    fi
    for port in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" $KAFKA_SASL_SSL_PORT; do
        port_open "$port" && die 1 "port $port on 127.0.0.1 is already in use by another process" \
            "(choose others with KAFKA_PORT / KAFKA_CONTROLLER_PORT)"
    done
    printf '%s\n' "$rendered" >"$PROPS"
    format_storage_once

    [[ -f "$LOG_FILE" ]] && mv -f "$LOG_FILE" "$LOG_FILE.1"
    # A new session: the broker outlives this script and the terminal or Python process
    # that ran it. 8>&- 9>&- keep the locks from leaking into the broker.
    if command -v setsid >/dev/null 2>&1; then launcher=(setsid); else launcher=(nohup); fi
    java_opts
    started="$(now)"
    "${launcher[@]}" "$JAVA" "${JAVA_OPTS[@]}" kafka.Kafka "$PROPS" </dev/null >"$LOG_FILE" 2>&1 8>&- 9>&- &
    pid=$!
    printf '%s\n' "$pid" >"$PID_FILE"

    deadline=$((SECONDS + KAFKA_START_TIMEOUT))
    while ((SECONDS < deadline)); do
        if ! process_alive "$pid"; then
            rc=0
            wait "$pid" || rc=$?
            rm -f "$PID_FILE"
            warn "Kafka $KAFKA_VERSION exited during start-up (exit status $rc)"
            tail_log
            exit 1
        fi
        # Both: the port alone opens before the broker has finished joining the quorum.
        if port_open "$KAFKA_PORT" && grep -q "$READY_LINE" "$LOG_FILE"; then
            info "Kafka $KAFKA_VERSION running: pid $pid, bootstrap 127.0.0.1:$KAFKA_PORT," \
                "${KAFKA_SASL_SSL_PORT:+SASL_SSL bootstrap 127.0.0.1:$KAFKA_SASL_SSL_PORT, }ready in $(elapsed_since "$started") s (log: $LOG_FILE)"
            return 0
        fi
        sleep 0.2
    done
    warn "Kafka $KAFKA_VERSION was not ready within $KAFKA_START_TIMEOUT s; stopping it"
    tail_log
    terminate "$pid" 10 >&2
    rm -f "$PID_FILE"
    exit 1
}

cmd_stop() {
    local pid
    check_settings
    if [[ ! -d "$KAFKA_DATA_DIR" ]]; then
        info "not running (no $KAFKA_DATA_DIR)"
        return 0
    fi
    set_paths
    lock 9 "$DATA_DIR/.lock"
    if ! pid="$(running_pid)"; then
        rm -f "$PID_FILE"
        info "not running"
        return 0
    fi
    terminate "$pid" "$KAFKA_STOP_TIMEOUT"
    rm -f "$PID_FILE"
}

cmd_status() {
    local pid bootstrap
    if [[ ! -d "$KAFKA_DATA_DIR" ]]; then
        info "not running (no $KAFKA_DATA_DIR)"
        return 1
    fi
    set_paths
    if pid="$(running_pid)"; then
        bootstrap="$(sed -n 's#^advertised.listeners=PLAINTEXT://\([^,]*\).*#\1#p' "$PROPS")"
        info "running: pid $pid, bootstrap $bootstrap, data $DATA_DIR"
        return 0
    fi
    info "not running"
    return 1
}

[[ $# -eq 1 ]] || usage
case "$1" in
    fetch) check_settings && cmd_fetch ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) usage ;;
esac
