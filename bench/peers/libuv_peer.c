// The libuv peer of loopbench (/work/shared/bench/WORKLOADS.md): the
// workloads libuv can express, written the way a libuv program would.
//
//   libuv_peer --run=callbacks|timers      one run, one JSON line, exit 1 if its check failed
//   libuv_peer --serve=echo|http [--port=N] the echo or http server: prints
//                                          "listening on 127.0.0.1:PORT", serves until SIGTERM
//                                          or SIGINT, then exits 0
//   libuv_peer --serve=echo|http [--port=N] --loops=N
//                                          the same on N loops (the many_loops workload), a
//                                          thread and a uv_loop_t each, pinned one per CPU,
//                                          each listening on the port with SO_REUSEPORT
//                                          (libuv 1.44 has no flag for it: set on the socket
//                                          before the bind)
//
// libuv has no coroutines (no tasks or sleep_chain) and no call_soon: the
// callbacks workload's chains are idle handles, the handle libuv runs once
// per loop iteration while it is active, which is what a callback that
// reschedules itself with call_soon amounts to. Its timers have millisecond
// resolution; each is given the smallest timeout that cannot fire before the
// microsecond due time (see timers()), so the "none early" check holds.
#define _GNU_SOURCE  // memmem
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <uv.h>

static double now_s(void) { return (double)uv_hrtime() / 1e9; }

static double peak_rss_kib(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_maxrss;
}

static void die(const char* what, int err) {
  fprintf(stderr, "libuv_peer: %s: %s\n", what, uv_strerror(err));
  exit(1);
}

// --- callbacks ----------------------------------------------------------------

enum { chains = 100, callbacks_n = 2000000 };
static long counter;

static void chain(uv_idle_t* idle) {
  if (counter >= callbacks_n) return;  // another chain reached N first
  if (++counter == callbacks_n) uv_stop(idle->loop);
}

static int callbacks(uv_loop_t* loop) {
  static uv_idle_t idles[chains];
  double t0 = now_s();
  for (int i = 0; i < chains; ++i) {
    uv_idle_init(loop, &idles[i]);
    uv_idle_start(&idles[i], chain);
  }
  uv_run(loop, UV_RUN_DEFAULT);
  double seconds = now_s() - t0;
  for (int i = 0; i < chains; ++i) uv_close((uv_handle_t*)&idles[i], NULL);
  uv_run(loop, UV_RUN_DEFAULT);
  int ok = counter == callbacks_n;
  printf("{\"workload\":\"callbacks\",\"backend\":\"libuv\",\"n\":%d,\"seconds\":%.6f,"
         "\"ns_per_op\":%.3f,\"peak_rss_kib\":%.0f,\"ok\":%s}\n",
         callbacks_n, seconds, seconds * 1e9 / callbacks_n, peak_rss_kib(),
         ok ? "true" : "false");
  return ok ? 0 : 1;
}

// --- timers -------------------------------------------------------------------

enum { timers_k = 200000 };

struct timer {
  uv_timer_t handle;
  uint64_t due_ns;  // uv_hrtime() at scheduling + the delay
};

static struct timer* timer_list;
static double* late_us;
static int fired, early;

static void timer_fired(uv_timer_t* handle) {
  struct timer* t = (struct timer*)handle;
  uint64_t now = uv_hrtime();
  if (now < t->due_ns) ++early;
  late_us[fired++] = now < t->due_ns ? -(double)(t->due_ns - now) / 1e3
                                      : (double)(now - t->due_ns) / 1e3;
  uv_close((uv_handle_t*)handle, NULL);
}

static int compare_double(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return (x > y) - (x < y);
}

static int timers(uv_loop_t* loop) {
  timer_list = calloc(timers_k, sizeof *timer_list);
  late_us = calloc(timers_k, sizeof *late_us);
  double t0 = now_s();
  for (int i = 0; i < timers_k; ++i) {
    uint64_t delay_ns = (uint64_t)((i * 7919L) % 200000) * 1000;
    struct timer* t = &timer_list[i];
    t->due_ns = uv_hrtime() + delay_ns;
    // libuv fires a timer when its loop time (whole ms of a clock that never
    // runs ahead of uv_hrtime) reaches uv_now() + timeout: the smallest
    // timeout at or after due_ns.
    uint64_t due_ms = (t->due_ns + 999999) / 1000000;
    uint64_t now_ms = uv_now(loop);
    uv_timer_init(loop, &t->handle);
    uv_timer_start(&t->handle, timer_fired, due_ms > now_ms ? due_ms - now_ms : 0, 0);
  }
  double scheduled = now_s();
  uv_run(loop, UV_RUN_DEFAULT);
  double seconds = now_s() - t0;
  qsort(late_us, (size_t)fired, sizeof *late_us, compare_double);
  int ok = fired == timers_k && early == 0;
  printf("{\"workload\":\"timers\",\"backend\":\"libuv\",\"n\":%d,\"seconds\":%.6f,"
         "\"ns_per_op\":%.3f,\"overhead_ms\":%.3f,\"late_p50_us\":%.1f,\"late_p99_us\":%.1f,"
         "\"schedule_ms\":%.3f,\"peak_rss_kib\":%.0f,\"ok\":%s",
         timers_k, seconds, seconds * 1e9 / timers_k, seconds * 1e3 - 200.0,
         fired ? late_us[fired / 2] : 0, fired ? late_us[fired * 99 / 100] : 0,
         (scheduled - t0) * 1e3, peak_rss_kib(), ok ? "true" : "false");
  if (!ok) printf(",\"error\":\"%d of %d fired, %d early\"", fired, timers_k, early);
  printf("}\n");
  free(timer_list);
  free(late_us);
  return ok ? 0 : 1;
}

// --- servers ------------------------------------------------------------------

static const char ok_response[] =
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!";
static const char not_found_response[] =
    "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\nNot Found\n";
static const char not_allowed_response[] =
    "HTTP/1.1 405 Method Not Allowed\r\nAllow: GET, HEAD\r\nContent-Type: text/plain\r\n"
    "Content-Length: 19\r\n\r\nMethod Not Allowed\n";
static const char bad_request_response[] =
    "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n"
    "Connection: close\r\n\r\nBad Request\n";

enum { read_size = 64 * 1024, max_head = 8 * 1024 };

// One connection: a 64 KiB receive buffer (as examples/echo_server's), and for
// http the unparsed rest of the requests and the answers of one read.
struct conn {
  uv_tcp_t tcp;
  int http;
  int closing;
  int shutting;  // closes once its writes are sent
  char buf[read_size];
  size_t pending;  // http: bytes of an incomplete request head at the start of buf
  char* out;       // http: the answers of one read
  size_t out_len, out_cap;
};

struct write_req {
  uv_write_t req;
  struct conn* c;
  char data[];
};

static void conn_closed(uv_handle_t* h) {
  struct conn* c = (struct conn*)h;
  free(c->out);
  free(c);
}

static void close_conn(struct conn* c) {
  if (c->closing) return;
  c->closing = 1;
  uv_close((uv_handle_t*)&c->tcp, conn_closed);
}

static void on_alloc(uv_handle_t* h, size_t suggested, uv_buf_t* buf) {
  (void)suggested;
  struct conn* c = (struct conn*)h;
  *buf = uv_buf_init(c->buf + c->pending, (unsigned)(read_size - c->pending));
}

static void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf);

static void written(uv_write_t* req, int status) {
  struct write_req* w = (struct write_req*)req;
  struct conn* c = w->c;
  free(w);
  if (status < 0) {
    close_conn(c);
  } else if (!c->closing && !c->shutting) {
    uv_read_start((uv_stream_t*)&c->tcp, on_alloc, on_read);
  }
}

// Sends `len` bytes now if the socket takes them; otherwise copies the rest
// into a write request and stops reading until it is sent (as polyloop's
// servers wait in drain()).
static void send_bytes(struct conn* c, const char* data, size_t len) {
  uv_buf_t b = uv_buf_init((char*)data, (unsigned)len);
  int sent = uv_try_write((uv_stream_t*)&c->tcp, &b, 1);
  if (sent == (int)len) return;
  if (sent < 0 && sent != UV_EAGAIN) {
    close_conn(c);
    return;
  }
  size_t done = sent > 0 ? (size_t)sent : 0;
  struct write_req* w = malloc(sizeof *w + len - done);
  w->c = c;
  memcpy(w->data, data + done, len - done);
  b = uv_buf_init(w->data, (unsigned)(len - done));
  uv_read_stop((uv_stream_t*)&c->tcp);
  if (uv_write(&w->req, (uv_stream_t*)&c->tcp, &b, 1, written) != 0) {
    free(w);
    close_conn(c);
  }
}

static void append_answer(struct conn* c, const char* text, size_t len) {
  if (c->out_len + len > c->out_cap) {
    c->out_cap = (c->out_len + len) * 2;
    c->out = realloc(c->out, c->out_cap);
  }
  memcpy(c->out + c->out_len, text, len);
  c->out_len += len;
}

// Whether a header line "Name: value" is a Connection header listing "close".
static int asks_to_close(const char* line, size_t len) {
  const char* colon = memchr(line, ':', len);
  if (colon == NULL || colon - line != 10 || strncasecmp(line, "connection", 10) != 0) return 0;
  const char* p = colon + 1;
  const char* end = line + len;
  while (p < end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == ',')) ++p;
    const char* token = p;
    while (p < end && *p != ',') ++p;
    const char* token_end = p;
    while (token_end > token && (token_end[-1] == ' ' || token_end[-1] == '\t')) --token_end;
    if (token_end - token == 5 && strncasecmp(token, "close", 5) == 0) return 1;
  }
  return 0;
}

// The answer to one request head (request line and headers, "\r\n\r\n"
// included): 200 for GET /, 404 for another target, 405 for another method,
// NULL for something that is not an HTTP/1.x request line (400, then close).
// *close_after: HTTP/1.0, or "Connection: close" (answer, then close).
static const char* answer_for(const char* head, size_t len, size_t* answer_len, int* is_head,
                              int* close_after) {
  const char* eol = memmem(head, len, "\r\n", 2);
  const char* sp1 = memchr(head, ' ', (size_t)(eol - head));
  if (sp1 == NULL || sp1 == head) return NULL;
  const char* sp2 = memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1));
  if (sp2 == NULL || sp2 == sp1 + 1) return NULL;
  if (eol - sp2 - 1 != 8 || (memcmp(sp2 + 1, "HTTP/1.1", 8) != 0 &&
                             memcmp(sp2 + 1, "HTTP/1.0", 8) != 0)) {
    return NULL;
  }
  *close_after = memcmp(sp2 + 1, "HTTP/1.0", 8) == 0;
  for (const char* line = eol + 2; line < head + len - 2;) {
    const char* line_end = memmem(line, (size_t)(head + len - line), "\r\n", 2);
    if (asks_to_close(line, (size_t)(line_end - line))) *close_after = 1;
    line = line_end + 2;
  }
  size_t method_len = (size_t)(sp1 - head);
  int get = method_len == 3 && memcmp(head, "GET", 3) == 0;
  *is_head = method_len == 4 && memcmp(head, "HEAD", 4) == 0;
  const char* answer;
  if (!get && !*is_head) {
    answer = not_allowed_response;
  } else if (sp2 - sp1 - 1 == 1 && sp1[1] == '/') {
    answer = ok_response;
  } else {
    answer = not_found_response;
  }
  *answer_len = strlen(answer);
  return answer;
}

static void shut_down_done(uv_shutdown_t* req, int status) {
  (void)status;
  close_conn((struct conn*)req->handle);
  free(req);
}

// Closes the connection once what was written has been sent (uv_close
// alone would drop a queued write).
static void shut_down(struct conn* c) {
  if (c->closing || c->shutting) return;
  c->shutting = 1;
  uv_read_stop((uv_stream_t*)&c->tcp);
  uv_shutdown_t* req = malloc(sizeof *req);
  if (uv_shutdown(req, (uv_stream_t*)&c->tcp, shut_down_done) != 0) {
    free(req);
    close_conn(c);
  }
}

static void serve_http(struct conn* c, size_t n) {
  size_t have = c->pending + n, start = 0;
  c->out_len = 0;
  int bad = 0, finish = 0;
  const char* end;
  while ((end = memmem(c->buf + start, have - start, "\r\n\r\n", 4)) != NULL) {
    size_t head_len = (size_t)(end - (c->buf + start)) + 4, answer_len = 0;
    int is_head = 0, close_after = 0;
    const char* answer =
        answer_for(c->buf + start, head_len, &answer_len, &is_head, &close_after);
    if (answer == NULL) {
      bad = 1;
      break;
    }
    if (is_head) answer_len = (size_t)(strstr(answer, "\r\n\r\n") - answer) + 4;
    append_answer(c, answer, answer_len);
    start += head_len;
    if (close_after) {
      finish = 1;
      break;
    }
  }
  if (!bad && !finish && have - start > max_head) bad = 1;
  if (bad) append_answer(c, bad_request_response, sizeof bad_request_response - 1);
  c->pending = have - start;
  if (start > 0 && c->pending > 0) memmove(c->buf, c->buf + start, c->pending);
  if (c->out_len > 0) send_bytes(c, c->out, c->out_len);
  if (bad || finish) shut_down(c);
}

static void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
  (void)buf;
  struct conn* c = (struct conn*)s;
  if (n < 0) {
    close_conn(c);  // UV_EOF: the client closed; or a reset
  } else if (n > 0) {
    if (c->http) {
      serve_http(c, (size_t)n);
    } else {
      send_bytes(c, c->buf, (size_t)n);
    }
  }
}

static int serving_http;

static void on_connection(uv_stream_t* server, int status) {
  if (status < 0) return;
  struct conn* c = calloc(1, sizeof *c);
  c->http = serving_http;
  uv_tcp_init(server->loop, &c->tcp);
  if (uv_accept(server, (uv_stream_t*)&c->tcp) != 0) {
    close_conn(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  uv_read_start((uv_stream_t*)&c->tcp, on_alloc, on_read);
}

static void close_any(uv_handle_t* h, void* arg) {
  (void)arg;
  if (uv_is_closing(h)) return;
  if (h->type == UV_TCP && h->data == NULL) {
    close_conn((struct conn*)h);
  } else {
    uv_close(h, NULL);
  }
}

static void on_signal(uv_signal_t* s, int signum) {
  (void)signum;
  uv_stop(s->loop);
}

static int serve(uv_loop_t* loop, int http, int port) {
  serving_http = http;
  uv_tcp_t server;
  uv_signal_t term, interrupt;
  struct sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", port, &addr);
  uv_tcp_init(loop, &server);
  server.data = &server;  // not a connection (close_any)
  int err = uv_tcp_bind(&server, (const struct sockaddr*)&addr, 0);
  if (err == 0) err = uv_listen((uv_stream_t*)&server, 1024, on_connection);
  if (err != 0) die("cannot listen on 127.0.0.1", err);
  struct sockaddr_in bound;
  int len = sizeof bound;
  uv_tcp_getsockname(&server, (struct sockaddr*)&bound, &len);
  uv_signal_init(loop, &term);
  term.data = &term;
  uv_signal_start(&term, on_signal, SIGTERM);
  uv_signal_init(loop, &interrupt);
  interrupt.data = &interrupt;
  uv_signal_start(&interrupt, on_signal, SIGINT);
  printf("listening on 127.0.0.1:%d\n", ntohs(bound.sin_port));
  fflush(stdout);
  uv_run(loop, UV_RUN_DEFAULT);
  uv_walk(loop, close_any, NULL);
  uv_run(loop, UV_RUN_DEFAULT);
  return 0;
}

// --loops=N > 1: one loop per thread, sharing nothing but the port.
struct shard {
  uv_loop_t loop;
  uv_tcp_t server;
  uv_signal_t term, interrupt;
  uv_thread_t thread;
  int cpu;  // -1: not pinned
};

// Listens on 127.0.0.1:port (0: a free one) on `s`'s loop, the port shared
// with SO_REUSEPORT; returns the port bound.
static int listen_shared(struct shard* s, int port) {
  struct sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", port, &addr);
  uv_tcp_init_ex(&s->loop, &s->server, AF_INET);
  s->server.data = &s->server;  // not a connection (close_any)
  uv_os_fd_t fd;
  int one = 1;
  int err = uv_fileno((uv_handle_t*)&s->server, &fd);
  if (err == 0 && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
    err = uv_translate_sys_error(errno);
  }
  if (err == 0) err = uv_tcp_bind(&s->server, (const struct sockaddr*)&addr, 0);
  if (err == 0) err = uv_listen((uv_stream_t*)&s->server, 1024, on_connection);
  if (err != 0) die("cannot listen on 127.0.0.1 with SO_REUSEPORT", err);
  struct sockaddr_in bound;
  int len = sizeof bound;
  uv_tcp_getsockname(&s->server, (struct sockaddr*)&bound, &len);
  // libuv's signal watchers are process-wide: every loop's gets the signal.
  uv_signal_init(&s->loop, &s->term);
  s->term.data = &s->term;
  uv_signal_start(&s->term, on_signal, SIGTERM);
  uv_signal_init(&s->loop, &s->interrupt);
  s->interrupt.data = &s->interrupt;
  uv_signal_start(&s->interrupt, on_signal, SIGINT);
  return ntohs(bound.sin_port);
}

static void run_shard(void* arg) {
  struct shard* s = arg;
  if (s->cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(s->cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
  }
  uv_run(&s->loop, UV_RUN_DEFAULT);
  uv_walk(&s->loop, close_any, NULL);
  uv_run(&s->loop, UV_RUN_DEFAULT);
}

static int serve_loops(int http, int port, int loops) {
  serving_http = http;
  cpu_set_t allowed;
  int cpus[CPU_SETSIZE], ncpus = 0;
  if (sched_getaffinity(0, sizeof allowed, &allowed) == 0) {
    for (int c = 0; c < CPU_SETSIZE; ++c) {
      if (CPU_ISSET(c, &allowed)) cpus[ncpus++] = c;
    }
  }
  struct shard* shards = calloc((size_t)loops, sizeof *shards);
  // Every loop listens before any runs: the first picks the port.
  for (int i = 0; i < loops; ++i) {
    uv_loop_init(&shards[i].loop);
    shards[i].cpu = ncpus >= 2 ? cpus[i % ncpus] : -1;
    port = listen_shared(&shards[i], port);
  }
  printf("listening on 127.0.0.1:%d\n", port);
  fflush(stdout);
  for (int i = 0; i < loops; ++i) uv_thread_create(&shards[i].thread, run_shard, &shards[i]);
  for (int i = 0; i < loops; ++i) {
    uv_thread_join(&shards[i].thread);
    uv_loop_close(&shards[i].loop);
  }
  free(shards);
  return 0;
}

int main(int argc, char** argv) {
  const char *run = NULL, *serve_what = NULL;
  int port = 0;
  int loops = 1;
  for (int i = 1; i < argc; ++i) {
    if (strncmp(argv[i], "--run=", 6) == 0) {
      run = argv[i] + 6;
    } else if (strncmp(argv[i], "--serve=", 8) == 0) {
      serve_what = argv[i] + 8;
    } else if (strncmp(argv[i], "--port=", 7) == 0) {
      port = atoi(argv[i] + 7);
    } else if (strncmp(argv[i], "--loops=", 8) == 0) {
      loops = atoi(argv[i] + 8);
      if (loops < 1 || loops > 1024) {
        fprintf(stderr, "libuv_peer: bad --loops '%s' (1 to 1024)\n", argv[i] + 8);
        return 2;
      }
    } else {
      fprintf(stderr, "libuv_peer: unknown argument '%s'\n", argv[i]);
      serve_what = run = NULL;
      break;
    }
  }
  if (loops > 1 && serve_what != NULL &&
      (strcmp(serve_what, "echo") == 0 || strcmp(serve_what, "http") == 0)) {
    return serve_loops(strcmp(serve_what, "http") == 0, port, loops);
  }
  uv_loop_t* loop = uv_default_loop();
  int status = 2;
  if (run != NULL && strcmp(run, "callbacks") == 0) {
    status = callbacks(loop);
  } else if (run != NULL && strcmp(run, "timers") == 0) {
    status = timers(loop);
  } else if (serve_what != NULL && (strcmp(serve_what, "echo") == 0 ||
                                    strcmp(serve_what, "http") == 0)) {
    status = serve(loop, strcmp(serve_what, "http") == 0, port);
  } else {
    fprintf(stderr,
            "usage: libuv_peer --run=callbacks|timers | --serve=echo|http [--port=N] [--loops=N]\n");
    return 2;
  }
  uv_loop_close(loop);
  return status;
}
