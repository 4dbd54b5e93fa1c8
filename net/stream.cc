#include "net/stream.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <coroutine>
#include <cerrno>
#include <cstring>
#include <system_error>
#include <utility>
#include <vector>

#include "core/backend/backend.h"
#include "core/io/io.h"
#include "core/task/sleep.h"
#include "core/combinators/gather.h"
#include "core/combinators/timeout.h"
#include "net/detail/lent_receiver.h"
#include "net/detail/multishot_accept.h"
#include "net/detail/orphan_close.h"
#include "net/detail/sockets.h"
#include "net/detail/stream_transport.h"
#include "net/dns.h"

namespace polyloop::net {

using namespace std::chrono_literals;

IncompleteReadError::IncompleteReadError(std::string partial_bytes, std::size_t expected_bytes)
    : std::runtime_error(expected_bytes != 0
                             ? std::to_string(partial_bytes.size()) + " bytes read on a total of " +
                                   std::to_string(expected_bytes) +
                                   " expected bytes: the peer closed the stream first"
                             : std::to_string(partial_bytes.size()) +
                                   " bytes read and no separator: the peer closed the stream first"),
      partial(std::move(partial_bytes)),
      expected(expected_bytes) {}

LimitOverrunError::LimitOverrunError(std::size_t limit, std::size_t buffered)
    : std::runtime_error("separator not found within the limit of " + std::to_string(limit) +
                         " bytes (" + std::to_string(buffered) +
                         " bytes buffered); raise the limit or read in pieces"),
      consumed(buffered) {}

std::string Address::to_string() const {
  if (!path.empty() || host.empty()) return path.empty() ? "(unnamed)" : path;
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

namespace {

Address to_address(const sockaddr_storage& ss, socklen_t len) {
  Address a;
  char buf[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET) {
    const auto& in = reinterpret_cast<const sockaddr_in&>(ss);
    ::inet_ntop(AF_INET, &in.sin_addr, buf, sizeof buf);
    a.host = buf;
    a.port = ntohs(in.sin_port);
  } else if (ss.ss_family == AF_INET6) {
    const auto& in6 = reinterpret_cast<const sockaddr_in6&>(ss);
    ::inet_ntop(AF_INET6, &in6.sin6_addr, buf, sizeof buf);
    a.host = buf;
    a.port = ntohs(in6.sin6_port);
  } else if (ss.ss_family == AF_UNIX) {
    const auto& un = reinterpret_cast<const sockaddr_un&>(ss);
    if (len > offsetof(sockaddr_un, sun_path)) {
      a.path.assign(un.sun_path, ::strnlen(un.sun_path, len - offsetof(sockaddr_un, sun_path)));
    }
  }
  return a;
}

[[noreturn]] void throw_errno(int err, const std::string& what) {
  throw std::system_error(err, std::generic_category(), what);
}

int new_socket(int family) {
  int fd = detail::sockets().socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw_errno(errno, "socket");
  return fd;
}

// Closes an fd the backend may have seen, so that it forgets it first.
Task<> close_quietly(int fd) {
  try {
    co_await async_close(fd);
  } catch (...) {
  }
}

sockaddr_un unix_address(const std::string& path) {
  sockaddr_un un{};
  un.sun_family = AF_UNIX;
  if (path.size() >= sizeof un.sun_path) {
    throw std::invalid_argument("Unix socket path too long (" + std::to_string(path.size()) +
                                " bytes, at most " + std::to_string(sizeof un.sun_path - 1) +
                                "): " + path);
  }
  std::memcpy(un.sun_path, path.data(), path.size());
  return un;
}

}  // namespace

// --- Stream -------------------------------------------------------------------

namespace detail {

// Tasks waiting for an event (drained, closed). Each wait has its own future,
// as asyncio's drain waiters do: cancelling one waiting task (wait_for around
// drain(), say) cancels only its own future, not the event for the others.
struct waiters {
  std::vector<Future<>> list;
  Future<> add(EventLoop& loop) {
    list.push_back(loop.create_future<>());
    return list.back();
  }
  void wake_all() {
    for (Future<>& f : list) {
      if (!f.done()) f.set_result();
    }
    list.clear();
  }
  void fail_all(const std::exception_ptr& e) {
    for (Future<>& f : list) {
      if (!f.done()) f.set_exception(e);
    }
    list.clear();
  }
};

struct stream_state;

// What stream_recv returns when this stream's own close() ended the receive.
constexpr std::int64_t recv_ended_by_close = -1;

// A receive that tells apart the two things that end it with ECANCELED. A
// cancel of the reading task sets must_cancel on its task_root before the
// backend drops the operation: that stays a CancelledError, as before. This
// stream's own close() goes through async_close, which makes the backend drop
// the fd's pending operations the same way, with nobody having cancelled the
// reader: asyncio's reader then sees end of stream (the transport's
// connection_lost feeds EOF to it), so it is reported as
// recv_ended_by_close, which the readers turn into EOF.
struct stream_recv {
  polyloop::detail::io_awaiter io;
  const bool* closed_locally;  // the stream's flag, set before its async_close

  bool await_ready() const noexcept { return false; }
  template <class Promise>
  void await_suspend(std::coroutine_handle<Promise> h) {
    io.await_suspend(h);
  }
  std::int64_t await_resume() {
    polyloop::detail::task_root* root = io.task.root;
    bool task_cancelled = root != nullptr && root->must_cancel;
    if (io.result == -ECANCELED && *closed_locally && !task_cancelled) {
      if (root != nullptr) root->waiting = {};  // what io_awaiter's await_resume would do
      return recv_ended_by_close;
    }
    return io.await_resume();
  }
};

struct stream_state final : std::enable_shared_from_this<stream_state>,
                            raw_socket,
                            polyloop::detail::state_link {
  EventLoop* loop = nullptr;
  Backend* backend = nullptr;  // the loop's; it outlives every stream on it
  int fd = -1;
  // A socket (recv/send), or one end of a pipe or another fd that is not a
  // socket (connect_read_pipe, connect_write_pipe: read/write operations).
  stream_end end = stream_end::socket;

  // TLS (start_tls): plain bytes go through it, and it uses the socket
  // through raw_recv/raw_send. Null for a plain stream.
  std::unique_ptr<stream_transport> transport;
  std::chrono::milliseconds transport_close_timeout{0};

  Task<std::size_t> raw_recv(char* buf, std::size_t len) override {
    std::int64_t n = co_await stream_recv{async_recv(fd, buf, len), &closed_locally};
    co_return n == recv_ended_by_close ? 0 : static_cast<std::size_t>(n);
  }
  Task<> raw_send(const char* buf, std::size_t len) override {
    while (len > 0) {
      auto n = static_cast<std::size_t>(co_await async_send(fd, buf, len));
      buf += n;
      len -= n;
    }
  }
  std::string peer_name() const override {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (fd >= 0 &&
        detail::sockets_of(*loop).getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
      return to_address(ss, len).to_string();
    }
    return "fd " + std::to_string(fd);
  }

  // Reading: in[in_head..in_size) is buffered and unread; in_cap bytes are
  // allocated. A plain array, not a std::string: growing a string zero-fills
  // it, and each receive would pay for clearing 64 KiB it then overwrites.
  std::unique_ptr<char[]> in;
  std::size_t in_cap = 0;
  std::size_t in_size = 0;
  std::size_t in_head = 0;
  bool eof = false;
  bool reading = false;
  // Where the backend lends buffers to a multishot receive (backend_traits::
  // multishot_recv; a socket without TLS): bytes are read from them in
  // place, and `in` is allocated only for bytes that must be joined across
  // buffers (read_until, read_exactly) or received plainly. rx is made by
  // the first read that waits.
  bool lends = false;
  std::unique_ptr<lent_receiver> rx;
  // The last receive returned less than it asked for: the socket is most
  // likely empty, and the next receive most likely waits (op_hint::expect_wait).
  bool drained = false;
  // A short receive empties this fd (a socket or a pipe; not a terminal,
  // whose reads end at a line): only then is the hint given.
  bool short_read_drains = true;

  // Writing: the writer task, or the direct send below, sends `sending`
  // (which nothing else touches while a send is in flight) and then takes
  // `pending`, which write() fills.
  std::string pending;
  std::string sending;
  std::size_t sent = 0;
  bool writer_running = false;
  // The writer task, without a reference (a Future here would form a cycle
  // with the frame, which holds this state); writer_slot clears it.
  polyloop::detail::future_state_base* writer_task = nullptr;
  bool restarting_writer = false;
  std::exception_ptr write_error;
  std::size_t high_water = Stream::default_high_water;
  std::size_t low_water = Stream::default_low_water;
  waiters drain_waiters;

  bool eof_requested = false;
  bool close_requested = false;
  bool closed_locally = false;  // close_now() has begun closing the fd
  bool closed = false;
  waiters close_waiters;

  // write() sends at once when nothing is queued on a backend whose start()
  // tries the syscall itself (backend_traits::tries_in_start: epoll, asio),
  // where the writer task's send would be the same syscall a loop turn
  // later. Otherwise (io_uring) the send is submitted with the loop's other
  // operations, one io_uring_enter for them all (direct_sends below), and a
  // syscall per write measured no cheaper there.
  bool send_at_once = true;
  // Where write() does not send at once, on a plain socket (io_uring, sim):
  // write() with nothing queued starts `direct`, a send owned by this state,
  // instead of a writer task (which was about 45 % of the io_uring echo's
  // user-space instructions). The bytes wait in `sending`; what is written
  // while it is in flight goes to `pending` and the next send takes it all
  // (one iteration's writes to one socket: one send). See start_direct().
  bool direct_sends = false;
  // `direct` is started or waits on the ready queue. writer_running is true
  // as well then: to the rest of the stream a send is under way either way.
  bool direct_in_flight = false;
  // cancel_all_tasks() cancelled `direct`: its completion hands the rest to
  // the writer's flush at shutdown.
  bool direct_shutdown = false;
  struct send_op final : operation {
    stream_state* owner = nullptr;
  };
  send_op direct;
  // Held while `direct` is in flight: the kernel reads `sending`, so the
  // state must outlive the send even if every Stream handle goes. Dropped
  // by the completion, or when the loop's close() forgets the operation
  // (then by the walk's release(), if a walk of the loop's states holds it).
  std::shared_ptr<stream_state> direct_self;
  std::uint32_t walk_pins = 0;  // state_link's add_ref: walks under way

  stream_state(EventLoop& l, int socket_fd, stream_end kind = stream_end::socket)
      : loop(&l),
        backend(&polyloop::detail::loop_access::backend(l)),
        fd(socket_fd),
        end(kind),
        // A pipe's writes go through the writer's write operation, which the
        // backend makes without SIGPIPE (backends/support/sigpipe.h).
        send_at_once(kind == stream_end::socket && backend->traits().tries_in_start),
        direct_sends(kind == stream_end::socket && !send_at_once) {
    direct.owner = this;
    direct.fn = &on_direct_done;
    direct.kind = op_kind::send;
    lends = kind == stream_end::socket && backend->traits().multishot_recv;
  }
  ~stream_state() {
    // A multishot receive still armed: it goes on its own once the close
    // below (or the one that came first) has ended it.
    if (rx && rx->busy() && !loop->is_closed()) lent_receiver::orphan(std::move(rx));
    // The last handle went without close(): close now (net/detail/orphan_close.h).
    close_orphaned_fd(*loop, std::exchange(fd, -1));
  }

  // One receive (recv on a socket, read on a pipe) and one send.
  polyloop::detail::io_awaiter receive(char* buf, std::size_t n) const noexcept {
    polyloop::detail::io_awaiter op =
        end == stream_end::socket ? async_recv(fd, buf, n) : async_read(fd, buf, n);
    if (drained) op.hints = op_hint::expect_wait;
    return op;
  }
  // Notes whether receiving `n` bytes of the `asked` drained the fd.
  void received(std::int64_t n, std::size_t asked) noexcept {
    drained = short_read_drains && n >= 0 && static_cast<std::size_t>(n) < asked;
  }
  polyloop::detail::io_awaiter transmit(const char* buf, std::size_t n) const noexcept {
    return end == stream_end::socket ? async_send(fd, buf, n) : async_write(fd, buf, n);
  }
  // The sending side is done (write_eof): a socket is shut down for
  // writing; a pipe's write end is closed, the only EOF a pipe has.
  void end_sending() {
    if (end == stream_end::socket) {
      detail::sockets_of(*loop).shutdown(fd, SHUT_WR);
    } else {
      close_requested = true;
      loop->create_task(closer(shared_from_this()));
    }
  }
  // Reading a write pipe or writing a read pipe: a clear error.
  void check_direction(stream_end wrong, const char* what) const {
    if (end == wrong) {
      throw std::logic_error(std::string(what) + ": this Stream is the " +
                             (wrong == stream_end::read_pipe ? "read" : "write") +
                             " end of a pipe (connect_" +
                             (wrong == stream_end::read_pipe ? "read" : "write") + "_pipe)");
    }
  }

  // What is buffered and unread: `in`'s bytes, or, when it has none, the
  // rest of the first lent buffer (the next one is seen once it is read).
  std::size_t available() const {
    if (in_size > in_head || !rx) return in_size - in_head;
    return rx->front().size();
  }
  std::size_t buffered_out() const { return pending.size() + sending.size() - sent; }
  std::string_view buffered() const {
    if (in_size > in_head || !rx) return {in.get() + in_head, in_size - in_head};
    std::span<const char> f = rx->front();
    return {f.data(), f.size()};
  }

  void consume(std::size_t n) {
    if (in_size == in_head && rx) {
      if (n > 0) rx->consume(n);
      return;
    }
    in_head += n;
    if (in_head == in_size) in_head = in_size = 0;
  }

  std::string take(std::size_t n) {
    std::string out(buffered().substr(0, n));
    consume(out.size());
    return out;
  }

  // One receive into the buffer; false at end of stream.
  static constexpr std::size_t chunk = 64 * 1024;

  // What fill() returns: one receive into the buffer, true unless at end of
  // stream. A plain stream's receive is awaited in place, in the reading
  // task's frame: a coroutine of its own cost a frame per receive, about
  // 230 of the http server's 2,470 user-space instructions per request
  // (callgrind, epoll). A TLS stream's goes through the transport's task, and a stream reading
  // lent buffers (io_uring's multishot receive) through fill_from_lent's.
  class fill_awaiter {
   public:
    explicit fill_awaiter(stream_state& s) noexcept
        : s_(s), recv_{s.receive(s.in.get() + s.in_size, chunk), &s.closed_locally} {}
    fill_awaiter(stream_state& s, Task<bool> through_transport) noexcept
        : s_(s),
          recv_{async_recv(-1, nullptr, 0), nullptr},  // never started
          tls_(std::move(through_transport)),
          tls_awaiter_(std::move(tls_).operator co_await()) {}

    bool await_ready() const noexcept { return tls_.valid() && tls_awaiter_.await_ready(); }
    template <class Promise>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<Promise> h) {
      if (tls_.valid()) return tls_awaiter_.await_suspend(h);
      recv_.await_suspend(h);
      return std::noop_coroutine();
    }
    bool await_resume() {
      if (tls_.valid()) return tls_awaiter_.await_resume();
      return s_.took_into_in(recv_.await_resume());
    }

   private:
    stream_state& s_;
    stream_recv recv_;
    Task<bool> tls_;  // owns the frame tls_awaiter_ runs
    polyloop::detail::inline_task_awaiter<bool> tls_awaiter_{};
  };

  fill_awaiter fill() {
    if (lends && !transport) return fill_awaiter(*this, fill_from_lent());
    make_room();
    if (transport) return fill_awaiter(*this, fill_through_transport());
    return fill_awaiter(*this);
  }

  // Appends what the first lent buffer holds unread to `in`, and gives it back.
  void absorb_front() {
    std::span<const char> f = rx->front();
    make_room_for(f.size());
    std::memcpy(in.get() + in_size, f.data(), f.size());
    in_size += f.size();
    rx->consume(f.size());
  }

  // fill() over lent buffers: the caller wants more than buffered(). What
  // it saw (the rest of a lent buffer) moves into `in`, and what comes next
  // joins it there; with `in` empty, the next buffer is read in place.
  Task<bool> fill_from_lent() {
    receiver().release_spent();  // what the last read_some() lent is no longer read
    if (rx->has_data()) absorb_front();
    while (true) {
      lent_receiver::status st = rx->check();
      if (st == lent_receiver::status::data) break;
      if (st == lent_receiver::status::eof) {
        eof = true;
        co_return false;
      }
      if (st == lent_receiver::status::starved) {
        // The lent buffers ran out (other connections hold them): one
        // plain receive, into `in`; the next fill arms the multishot again.
        co_return co_await fill_plainly();
      }
      co_await rx->wait();
    }
    if (in_size > in_head) {
      while (rx->has_data()) absorb_front();
    }
    co_return true;
  }

  // Ends the multishot receive and moves what it queued into `in`
  // (start_tls: from then on the transport receives).
  Task<> stop_lending() {
    lends = false;
    if (!rx) co_return;
    rx->stop();
    while (rx->busy()) co_await rx->wait();
    while (rx->has_data()) absorb_front();
    rx.reset();
  }

  // Inline: a read of a stream whose buffer has room calls nothing.
  [[gnu::always_inline]] void make_room() {
    if (in_head == 0 && in_cap - in_size >= chunk) return;
    make_room_for(chunk);
  }
  void make_room_for(std::size_t want) {
    if (in_head > 0 && in_head * 2 >= in_size) {  // compact: keeps the buffer from creeping
      std::memmove(in.get(), in.get() + in_head, in_size - in_head);
      in_size -= in_head;
      in_head = 0;
    }
    if (in_cap - in_size < want) {
      std::size_t cap = std::max(in_size + std::max(want, chunk), in_cap * 2);
      std::unique_ptr<char[]> bigger(new char[cap]);  // default-initialised: not cleared
      if (in_size > 0) std::memcpy(bigger.get(), in.get(), in_size);
      in = std::move(bigger);
      in_cap = cap;
    }
  }

  // After a receive of up to `chunk` bytes into `in`; false at end of stream.
  bool took_into_in(std::int64_t n) noexcept {
    if (n == recv_ended_by_close) n = 0;
    received(n, chunk);
    in_size += static_cast<std::size_t>(n);
    if (n == 0) eof = true;
    return n != 0;
  }
  // One plain receive into `in` (the lent buffers ran out).
  fill_awaiter fill_plainly() {
    make_room();
    return fill_awaiter(*this);
  }

  // What a lent read does next, once it found nothing buffered: `data`
  // (bytes are lent, or end of stream: then eof is set and it reads as
  // data), `starved` (the ring ran out: one plain receive) or `wait`.
  // Throws what check() throws (a reset).
  lent_receiver::status lent_status(lent_receiver& rx) {
    lent_receiver::status st = rx.check();
    if (st != lent_receiver::status::eof) return st;
    eof = true;
    return lent_receiver::status::data;
  }
  lent_receiver& receiver() {
    if (!rx) rx = std::make_unique<lent_receiver>(*loop, fd, &closed_locally);
    return *rx;
  }

  Task<bool> fill_through_transport() {
    std::size_t n = co_await transport->recv(*this, in.get() + in_size, chunk);
    in_size += n;
    if (n == 0) eof = true;
    co_return n != 0;
  }

  // Inline: an open stream that reads calls nothing.
  [[gnu::always_inline]] void check_can_read() const {
    if (fd >= 0 && end != stream_end::write_pipe) return;
    check_direction(stream_end::write_pipe, "read");
    if (fd < 0 && available() == 0) {
      throw std::logic_error("read: the stream is closed");
    }
  }

  void settle_drainers() {
    if (drain_waiters.list.empty()) return;
    if (write_error) {
      drain_waiters.fail_all(write_error);
    } else if (buffered_out() <= low_water) {
      drain_waiters.wake_all();
    }
  }

  // Sends both buffers until they are empty.
  Task<> send_buffered() {
    while (true) {
      if (sent == sending.size()) {
        sending.clear();
        sent = 0;
        if (pending.empty()) break;
        std::swap(sending, pending);
      }
      std::int64_t n =
          transport ? static_cast<std::int64_t>(co_await transport->send(
                          *this, sending.data() + sent, sending.size() - sent))
                    : co_await transmit(sending.data() + sent, sending.size() - sent);
      sent += static_cast<std::size_t>(n);
      settle_drainers();
    }
  }

  // "stream fd 7 to 127.0.0.1:5000", for reports.
  std::string describe() const {
    std::string what = "stream fd " + std::to_string(fd);
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (fd >= 0 &&
        detail::sockets_of(*loop).getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
      what += " to " + to_address(ss, len).to_string();
    }
    return what;
  }

  // Bytes a user wrote that will never be sent: said through the loop's
  // exception handler (never dropped silently), then the buffers are cleared.
  void report_lost(const std::string& why, std::exception_ptr failure) noexcept {
    std::size_t lost = buffered_out();
    pending.clear();
    sending.clear();
    sent = 0;
    if (lost == 0) return;
    try {
      loop->call_exception_handler({describe() + ": " + std::to_string(lost) +
                                        " bytes written were never sent: " + why,
                                    failure});
    } catch (...) {  // building the message ran out of memory: nothing more to do
    }
  }

  // The writer was cancelled: only cancel_all_tasks() can do that (nobody
  // else holds its Future), so the loop is shutting down (run()). asyncio's
  // transports are not tasks and still flush on close; here the writer goes
  // on sending what was written, for at most shutdown_flush_timeout
  // (cancel_all_tasks() runs the loop until it ends), and what the peer
  // did not take by then, or what a failure kept from it, is reported lost.
  Task<> flush_at_shutdown() {
    TimerHandle deadline;
    if (polyloop::detail::future_state_base* self = writer_task) {
      deadline = loop->call_later(Stream::shutdown_flush_timeout, [self] { self->cancel(); });
    }
    std::exception_ptr failure;
    try {
      co_await send_buffered();
    } catch (const CancelledError&) {  // the deadline (or a second cancel_all_tasks())
      failure = std::make_exception_ptr(std::system_error(
          ETIMEDOUT, std::generic_category(),
          "send: the peer did not take what was written within " +
              std::to_string(Stream::shutdown_flush_timeout.count()) +
              " ms of the loop's shutdown (cancel_all_tasks)"));
    } catch (...) {
      failure = std::current_exception();
    }
    deadline.cancel();
    if (!failure) co_return;
    write_error = failure;
    report_lost("the loop was shutting down (cancel_all_tasks) and sending failed", failure);
  }

  // The writer's own handle on its frame, passed by value so that it goes
  // with the frame whether the body ran or not (as the server's task_slot).
  struct writer_slot {
    std::shared_ptr<stream_state> s;
    bool ran = false;    // the body started
    bool ended = false;  // the body reached its end
    explicit writer_slot(std::shared_ptr<stream_state> st) : s(std::move(st)) {}
    writer_slot(writer_slot&& o) noexcept : s(std::move(o.s)), ran(o.ran), ended(o.ended) {}
    ~writer_slot() {
      if (s) s->writer_gone(ran, ended);
    }
  };

  // The writer's frame went. Unless its body ended, either the task was
  // cancelled before its first step (cancel_all_tasks() in the iteration
  // that queued it: the body never runs, see core/task/task.h), and a
  // writer that starts in its shutdown flush takes over, or the loop closed
  // under it, and what it held is reported lost.
  void writer_gone(bool ran, bool ended) noexcept {
    writer_task = nullptr;
    if (ended) return;
    // (restarting: a writer whose frame could not even be made must not
    // start another from here, and so on.)
    if (!ran && !restarting_writer && !loop->is_closed()) {
      restarting_writer = true;
      bool started = false;
      try {
        start_writer_task(true);
        started = true;
      } catch (...) {
      }
      restarting_writer = false;
      if (started) return;
    }
    writer_running = false;
    report_lost("the loop was closed before they could be", nullptr);
  }

  static Task<> writer(writer_slot slot, bool shutting_down) {
    slot.ran = true;
    std::shared_ptr<stream_state> s = slot.s;
    bool cancelled = shutting_down;
    if (!cancelled) {
      try {
        co_await s->send_buffered();
      } catch (const CancelledError&) {
        cancelled = true;
      } catch (...) {
        s->write_error = std::current_exception();
      }
    }
    if (cancelled) co_await s->flush_at_shutdown();
    if (s->write_error) {
      s->pending.clear();
      s->sending.clear();
      s->sent = 0;
    }
    s->writer_running = false;
    slot.ended = true;
    s->settle_drainers();
    if (s->eof_requested && !s->write_error && s->fd >= 0) {
      if (s->end == stream_end::socket) {
        detail::sockets_of(*s->loop).shutdown(s->fd, SHUT_WR);
      } else {
        s->close_requested = true;  // a pipe's EOF is its close
      }
    }
    if (s->close_requested) co_await s->close_now();
  }

  void start_writer_task(bool shutting_down) {
    Future<> task = loop->create_task(writer(writer_slot(shared_from_this()), shutting_down));
    writer_task = polyloop::detail::future_access::state(task);
  }

  // --- The direct send (direct_sends) ---
  //
  // Why a state_link, of the loop's two hooks: the stream is linked into the
  // loop's list of live states only while `direct` is in flight (a few
  // pointer stores, no allocation), and that list hears both events a send
  // owned by no task must: the loop's close() (shutdown() never hands the
  // operation back: report the bytes lost, drop direct_self) and
  // cancel_all_tasks() (keep the loop running while the send ends, then
  // flush for up to shutdown_flush_timeout). A loop_extension hears only
  // the close, and would cost an allocation per loop.

  // write() with nothing queued (!writer_running): `data` becomes the send.
  void send_direct(std::string_view data) {
    polyloop::detail::loop_access::check_open(*loop);  // as create_task() would
    sending.assign(data);
    sent = 0;
    start_direct();
  }
  // The bytes are in `sending`, from `sent` on.
  void start_direct() noexcept {
    direct_self = shared_from_this();
    writer_running = true;
    direct_in_flight = true;
    polyloop::detail::loop_access::link_state(*loop, this);
    submit_direct();
  }

  void submit_direct() noexcept {
    direct.fd = fd;
    direct.buf = sending.data() + sent;
    direct.len = sending.size() - sent;
    direct.result = 0;
    ++polyloop::detail::loop_access::counts(*loop).ops_started[static_cast<std::size_t>(op_kind::send)];
    backend->start(direct);
  }

  static void on_direct_done(polyloop::detail::ready_node* n,
                             polyloop::detail::ready_node::action what) noexcept {
    stream_state& s = *static_cast<send_op*>(n)->owner;
    if (what == polyloop::detail::ready_node::action::run) {
      s.direct_done();
    } else {
      s.direct_forgotten();  // the loop is closing: it will never run
    }
  }

  // `direct` completed. What the writer task does after each send, without
  // a task: the rest, or what was written meanwhile, goes in the next send.
  void direct_done() noexcept {
    polyloop::detail::loop_counters& counts = polyloop::detail::loop_access::counts(*loop);
    ++counts.ops_completed[static_cast<std::size_t>(op_kind::send)];
    std::int64_t r = direct.result;
    if (r >= 0) {
      sent += static_cast<std::size_t>(r);
    } else if (r == -ECANCELED && direct_shutdown) {
      ++counts.ops_cancelled[static_cast<std::size_t>(op_kind::send)];
    } else {
      note_send_error(static_cast<int>(-r));
    }
    if (sent == sending.size()) {
      sending.clear();
      sent = 0;
      std::swap(sending, pending);
    }
    if (!write_error && !sending.empty()) {
      if (direct_shutdown) {
        hand_to_shutdown_flush();
        return;
      }
      settle_drainers_noexcept();
      submit_direct();
      return;
    }
    end_direct();
  }

  // The send failed: reported as the writer reports it (drain(),
  // wait_closed(), the next write()), named as async_send names it.
  void note_send_error(int err) noexcept {
    try {
      write_error = std::make_exception_ptr(std::system_error(
          err, std::generic_category(), "send(fd " + std::to_string(fd) + ")"));
    } catch (...) {
      write_error = std::current_exception();  // out of memory: that says why
    }
  }

  void settle_drainers_noexcept() noexcept {
    try {
      settle_drainers();
    } catch (...) {  // no memory for the ready queue: say so, the waiter stays
      loop->call_exception_handler({describe_noexcept() + ": waking drain()", std::current_exception()});
    }
  }

  std::string describe_noexcept() const noexcept {
    try {
      return describe();
    } catch (...) {
      return "a stream";
    }
  }

  // Nothing more to send, or a failure: the writer task's tail, then the
  // self reference goes, last (it may be the state's last).
  void end_direct() noexcept {
    std::shared_ptr<stream_state> keep = std::move(direct_self);
    polyloop::detail::loop_access::unlink_state(*loop, this);
    direct_in_flight = false;
    direct_shutdown = false;
    if (write_error) {
      pending.clear();
      sending.clear();
      sent = 0;
    }
    writer_running = false;
    settle_drainers_noexcept();
    if (eof_requested && !write_error && fd >= 0) detail::sockets_of(*loop).shutdown(fd, SHUT_WR);
    if (close_requested && fd >= 0) {
      try {
        loop->create_task(closer(shared_from_this()));
      } catch (...) {
        loop->call_exception_handler(
            {describe_noexcept() + ": closing after the last send", std::current_exception()});
      }
    }
  }

  // cancel_all_tasks() ended the send with bytes left: the writer task,
  // started in its flush at shutdown, sends them (with its deadline) or
  // reports them lost.
  void hand_to_shutdown_flush() noexcept {
    std::shared_ptr<stream_state> keep = std::move(direct_self);
    polyloop::detail::loop_access::unlink_state(*loop, this);
    direct_in_flight = false;
    direct_shutdown = false;
    try {
      start_writer_task(true);  // writer_running stays true
    } catch (...) {
      writer_running = false;
      report_lost("the loop was shutting down and the flush could not start",
                  std::current_exception());
    }
  }

  // The loop closed with `direct` in flight (shutdown() forgot it) or
  // completed but never run: the bytes are reported lost, as a writer
  // destroyed by the close reports them.
  void direct_forgotten() noexcept {
    if (!direct_in_flight) return;
    polyloop::detail::loop_access::unlink_state(*loop, this);
    direct_in_flight = false;
    direct_shutdown = false;
    writer_running = false;
    report_lost("the loop was closed before they could be", nullptr);
    if (walk_pins == 0) {
      std::shared_ptr<stream_state> last = std::move(direct_self);  // may destroy this
    }
  }

  // state_link. A walk (close(), cancel_all_tasks()) holds every state it
  // visits; a stream is linked only while direct_self holds it, so holding
  // is keeping direct_self until the walk's release().
  void add_ref() noexcept override { ++walk_pins; }
  void release() noexcept override {
    if (--walk_pins != 0 || direct_in_flight) return;
    std::shared_ptr<stream_state> last = std::move(direct_self);  // may destroy this
  }
  bool on_loop_event(loop_event e) override {
    switch (e) {
      case loop_event::closed:
        direct_forgotten();
        return false;
      case loop_event::cancel_task:
        // As the writer task is cancelled: the send ends now (a peer that
        // never reads would hold it for ever), and its completion hands
        // the rest to the flush at shutdown. Counted as a cancelled task,
        // as the writer was, so that cancel_all_tasks() runs the loop.
        if (!direct_in_flight || direct_shutdown) return false;
        direct_shutdown = true;
        backend->cancel(direct);
        return true;
      case loop_event::is_pending_task:
        return direct_in_flight;
      case loop_event::destroyed:
        return false;
    }
    return false;
  }
  std::string describe_if_task(const void*, const void*) override { return {}; }

  Task<> close_now() {
    if (fd < 0) co_return;
    if (transport && !write_error) {  // TLS's close_notify, within its timeout
      try {
        co_await wait_for(transport->close(*this, reading), transport_close_timeout);
      } catch (...) {  // not sent, or no answer in time: the socket closes all the same
      }
      if (fd < 0) co_return;  // closed meanwhile
    }
    int f = std::exchange(fd, -1);
    closed_locally = true;  // a receive this close ends is end of stream (stream_recv)
    try {
      co_await async_close(f);
    } catch (...) {
    }
    closed = true;
    close_waiters.wake_all();
  }

  static Task<> closer(std::shared_ptr<stream_state> s) { co_await s->close_now(); }

  void start_writer() {
    if (writer_running) return;
    writer_running = true;
    try {
      start_writer_task(false);
    } catch (...) {
      writer_running = false;
      throw;
    }
  }
};

}  // namespace detail

Stream::Stream(int fd) : s_(std::make_shared<detail::stream_state>(get_running_loop(), fd)) {}

Stream::Stream(std::shared_ptr<detail::stream_state> state) : s_(std::move(state)) {}

namespace {
// A pipe end for the loop's backend: non-blocking (the readiness backends
// make each attempt as a syscall on the loop's thread; io_uring waits for
// readiness after EAGAIN), as asyncio's pipe transports set it too.
std::shared_ptr<detail::stream_state> pipe_state(int fd, detail::stream_end end, const char* what) {
  struct stat st {};
  if (fd < 0 || ::fstat(fd, &st) != 0) {
    throw_errno(fd < 0 ? EBADF : errno, std::string(what) + "(fd " + std::to_string(fd) + ")");
  }
  if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)) {
    throw std::invalid_argument(std::string(what) + "(fd " + std::to_string(fd) +
                                "): a regular file or directory is always ready and cannot be "
                                "waited on; use a pipe, FIFO, socket or terminal");
  }
  EventLoop& loop = get_running_loop();
  int fl = ::fcntl(fd, F_GETFL);
  if (fl < 0 || ((fl & O_NONBLOCK) == 0 && ::fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0)) {
    throw_errno(errno, std::string(what) + ": fcntl(O_NONBLOCK) on fd " + std::to_string(fd));
  }
  auto state = std::make_shared<detail::stream_state>(loop, fd, end);
  state->short_read_drains = S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode);
  return state;
}
}  // namespace

Stream connect_read_pipe(int fd) {
  return Stream(pipe_state(fd, detail::stream_end::read_pipe, "connect_read_pipe"));
}
Stream connect_write_pipe(int fd) {
  return Stream(pipe_state(fd, detail::stream_end::write_pipe, "connect_write_pipe"));
}

namespace {
detail::stream_state& state_of(const std::shared_ptr<detail::stream_state>& s) {
  if (!s) throw std::logic_error("this Stream is empty (default-constructed)");
  return *s;
}

// Marks the stream as read by one task at a time, as asyncio requires.
struct read_guard {
  detail::stream_state& s;
  explicit read_guard(detail::stream_state& st) : s(st) {
    if (s.reading) {
      throw std::logic_error("read: another task is already reading this stream");
    }
    s.reading = true;
  }
  ~read_guard() { s.reading = false; }
};
}  // namespace

Task<std::string> Stream::read(std::size_t n) {
  auto keep = s_;
  detail::stream_state& s = state_of(keep);
  read_guard guard(s);
  if (n == 0) co_return std::string();
  if (s.available() == 0 && !s.eof) {
    s.check_can_read();
    co_await s.fill();
  }
  co_return s.take(n);
}

namespace {
// Stream::read_some's and read_into's bodies, apart so that each stays one
// co_await on its common path (see fill()): over a plain receive, over lent
// buffers, and through fill() (TLS).
std::span<const char> lend_buffered(detail::stream_state& s) {
  // consume() leaves the bytes where they are: the next receive writes over
  // them (a lent buffer goes back at the next read), and only a read makes one.
  std::span<const char> view(s.buffered().data(), s.available());
  s.consume(view.size());
  return view;
}

Task<std::span<const char>> read_some_filled(std::shared_ptr<detail::stream_state> keep) {
  detail::stream_state& s = state_of(keep);
  read_guard guard(s);
  if (s.available() == 0 && !s.eof) {
    s.check_can_read();
    co_await s.fill();
  }
  co_return lend_buffered(s);
}

// No lent buffers here (rx is null): `in` alone.
Task<std::span<const char>> read_some_socket(std::shared_ptr<detail::stream_state> keep) {
  detail::stream_state& s = *keep;
  read_guard guard(s);
  if (s.in_size == s.in_head && !s.eof) {
    s.check_can_read();
    s.make_room();
    std::int64_t n = co_await detail::stream_recv{
        s.receive(s.in.get() + s.in_size, detail::stream_state::chunk), &s.closed_locally};
    s.took_into_in(n);
  }
  std::span<const char> view(s.in.get() + s.in_head, s.in_size - s.in_head);
  s.in_head = s.in_size = 0;  // all of it taken; the bytes stay until the next receive
  co_return view;
}

Task<std::span<const char>> read_some_lent(std::shared_ptr<detail::stream_state> keep) {
  detail::stream_state& s = *keep;
  read_guard guard(s);
  if (s.rx) s.rx->release_spent();  // what the last read_some() lent is no longer read
  if (s.available() == 0 && !s.eof) {
    s.check_can_read();
    detail::lent_receiver& rx = s.receiver();
    using lent = detail::lent_receiver::status;
    for (lent st; (st = s.lent_status(rx)) != lent::data;) {
      if (st == lent::starved) {
        co_await s.fill_plainly();
        break;
      }
      co_await rx.wait();
    }
  }
  if (s.in_size > s.in_head || !s.rx) co_return lend_buffered(s);
  // The first lent buffer's rest, in place; given back at the next read.
  std::span<const char> view = s.rx->front();
  if (!view.empty()) s.rx->consume(view.size());
  co_return view;
}
}  // namespace

Task<std::span<const char>> Stream::read_some() {
  if (s_ && !s_->transport) return s_->lends ? read_some_lent(s_) : read_some_socket(s_);
  return read_some_filled(s_);
}

namespace {
// Stream::read_into's bodies, apart so that the plain one stays one
// co_await (see fill()).
Task<std::size_t> read_into_through_transport(std::shared_ptr<detail::stream_state> keep,
                                              std::span<char> out) {
  detail::stream_state& s = *keep;
  read_guard guard(s);
  if (out.empty()) co_return 0;
  if (s.available() == 0 && !s.eof) {
    s.check_can_read();
    co_await s.fill();
  }
  std::size_t n = std::min(out.size(), s.available());
  if (n > 0) std::memcpy(out.data(), s.buffered().data(), n);
  s.consume(n);
  co_return n;
}

// Copied out of the lent buffers (as much of them as `out` takes).
Task<std::size_t> read_into_lent(std::shared_ptr<detail::stream_state> keep, std::span<char> out) {
  detail::stream_state& s = *keep;
  read_guard guard(s);
  if (s.rx) s.rx->release_spent();  // what the last read_some() lent is no longer read
  if (out.empty()) co_return 0;
  if (s.available() == 0 && !s.eof) {
    s.check_can_read();
    detail::lent_receiver& rx = s.receiver();
    using lent = detail::lent_receiver::status;
    for (lent st; (st = s.lent_status(rx)) != lent::data;) {
      if (st == lent::starved) {
        co_await s.fill_plainly();
        break;
      }
      co_await rx.wait();
    }
  }
  std::size_t copied = 0;
  while (copied < out.size() && s.available() > 0) {
    std::size_t n = std::min(out.size() - copied, s.available());
    std::memcpy(out.data() + copied, s.buffered().data(), n);
    s.consume(n);
    copied += n;
  }
  co_return copied;
}

Task<std::size_t> read_into_socket(std::shared_ptr<detail::stream_state> keep,
                                   std::span<char> out) {
  detail::stream_state& s = state_of(keep);
  read_guard guard(s);
  if (out.empty()) co_return 0;
  if (s.available() > 0) {
    std::size_t n = std::min(out.size(), s.available());
    std::memcpy(out.data(), s.buffered().data(), n);
    s.consume(n);
    co_return n;
  }
  if (s.eof) co_return 0;
  s.check_can_read();
  // Straight into the caller's buffer: no copy, no allocation.
  std::int64_t n =
      co_await detail::stream_recv{s.receive(out.data(), out.size()), &s.closed_locally};
  if (n == detail::recv_ended_by_close) n = 0;
  s.received(n, out.size());
  if (n == 0) s.eof = true;
  co_return static_cast<std::size_t>(n);
}
}  // namespace

Task<std::size_t> Stream::read_into(std::span<char> out) {
  if (s_ && s_->transport) return read_into_through_transport(s_, out);
  if (s_ && s_->lends) return read_into_lent(s_, out);
  return read_into_socket(s_, out);
}

Task<std::string> Stream::read_exactly(std::size_t n) {
  auto keep = s_;
  detail::stream_state& s = state_of(keep);
  read_guard guard(s);
  while (s.available() < n && !s.eof) {
    s.check_can_read();
    co_await s.fill();
  }
  if (s.available() < n) throw IncompleteReadError(s.take(s.available()), n);
  co_return s.take(n);
}

Task<std::string> Stream::read_until(std::string_view separator, std::size_t limit) {
  if (separator.empty()) throw std::invalid_argument("read_until: the separator is empty");
  auto keep = s_;
  detail::stream_state& s = state_of(keep);
  read_guard guard(s);
  std::size_t searched = 0;  // bytes already known not to start a separator
  while (true) {
    std::string_view buf = s.buffered();
    std::size_t pos = buf.find(separator, searched);
    if (pos != std::string_view::npos) {
      if (pos + separator.size() > limit) throw LimitOverrunError(limit, s.available());
      co_return s.take(pos + separator.size());
    }
    if (buf.size() > limit) throw LimitOverrunError(limit, buf.size());
    if (buf.size() >= separator.size()) searched = buf.size() - separator.size() + 1;
    if (s.eof) throw IncompleteReadError(s.take(s.available()), 0);
    s.check_can_read();
    co_await s.fill();  // may compact the buffer: offsets from in_head stay valid
  }
}

bool Stream::at_eof() const {
  const detail::stream_state& s = state_of(s_);
  return s.eof && s.available() == 0;
}

namespace {
// What write_owned checks first (write() keeps its own copy inline: a call
// here cost the 64-byte echo on io_uring about 35 instructions per message).
void check_can_write(const detail::stream_state& s) {
  s.check_direction(detail::stream_end::read_pipe, "write");
  if (s.write_error) std::rethrow_exception(s.write_error);
  if (s.close_requested || s.fd < 0) throw std::logic_error("write: the stream is closed");
  if (s.eof_requested) throw std::logic_error("write: write_eof() was called on this stream");
}

// write()'s send at once, for write_owned: the bytes the kernel took, or
// send_failed (then reported as the writer would report it: by drain(),
// wait_closed() and the next write()).
constexpr std::size_t send_failed = std::string_view::npos;
std::size_t send_now(detail::stream_state& s, std::string_view data) {
  if (s.writer_running || !s.send_at_once) return 0;
  ssize_t n = ::send(s.fd, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  if (n >= 0) return static_cast<std::size_t>(n);
  if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ENOTSOCK) {
    s.write_error = std::make_exception_ptr(std::system_error(
        errno, std::generic_category(), "send(fd " + std::to_string(s.fd) + ")"));
    s.settle_drainers();
    return send_failed;
  }
  // EAGAIN (the socket buffer is full), or not a socket: the writer's
  // operation waits, or reports, on the loop's backend.
  return 0;
}
}  // namespace

void Stream::write(std::string_view data) {
  detail::stream_state& s = state_of(s_);
  s.check_direction(detail::stream_end::read_pipe, "write");
  if (s.write_error) std::rethrow_exception(s.write_error);
  if (s.close_requested || s.fd < 0) throw std::logic_error("write: the stream is closed");
  if (s.eof_requested) throw std::logic_error("write: write_eof() was called on this stream");
  if (data.empty()) return;
  if (!s.writer_running && s.send_at_once) {
    // Nothing queued: hand the bytes to the kernel now, as asyncio's
    // transports do. Most writes go whole, and need neither a copy into
    // `pending` nor a writer task; what the kernel does not take yet goes to
    // the writer as before. MSG_DONTWAIT: an adopted socket may be blocking.
    ssize_t n = ::send(s.fd, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0) {
      data.remove_prefix(static_cast<std::size_t>(n));
      if (data.empty()) return;
    } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ENOTSOCK) {
      // Reported as the writer would report it: by drain(), wait_closed()
      // and the next write().
      s.write_error = std::make_exception_ptr(std::system_error(
          errno, std::generic_category(), "send(fd " + std::to_string(s.fd) + ")"));
      s.settle_drainers();
      return;
    }
    // EAGAIN (the socket buffer is full), or not a socket: the writer's
    // operation waits, or reports, on the loop's backend.
  } else if (!s.writer_running && s.direct_sends) {
    s.send_direct(data);  // the one copy: the kernel reads it after write() returns
    return;
  }
  s.pending.append(data);
  s.start_writer();
}

void Stream::write_owned(std::string&& data) {
  detail::stream_state& s = state_of(s_);
  check_can_write(s);
  if (data.empty()) return;
  std::size_t taken = send_now(s, data);
  if (taken == send_failed || taken == data.size()) return;
  if (!s.writer_running && s.sending.empty() && s.pending.empty()) {
    // Nothing queued: the string itself becomes what the writer (or the
    // direct send) sends next, its bytes not copied (sending from `sent`).
    if (s.direct_sends) polyloop::detail::loop_access::check_open(*s.loop);
    s.sending = std::move(data);
    s.sent = taken;
    if (s.direct_sends) {
      s.start_direct();
      return;
    }
  } else {
    s.pending.append(std::string_view(data).substr(taken));
  }
  s.start_writer();
}

Task<> Stream::drain() {
  auto keep = s_;
  detail::stream_state& s = state_of(keep);
  if (s.write_error) std::rethrow_exception(s.write_error);
  if (s.buffered_out() <= s.high_water) co_return;
  Future<> drained = s.drain_waiters.add(*s.loop);
  co_await drained;
}

std::size_t Stream::write_buffer_size() const { return state_of(s_).buffered_out(); }

void Stream::set_write_buffer_limits(std::size_t high, std::size_t low) {
  if (low > high) throw std::invalid_argument("set_write_buffer_limits: low is above high");
  detail::stream_state& s = state_of(s_);
  s.high_water = high;
  s.low_water = low;
  s.settle_drainers();
}

void Stream::write_eof() {
  detail::stream_state& s = state_of(s_);
  if (s.eof_requested || s.fd < 0) return;
  s.check_direction(detail::stream_end::read_pipe, "write_eof");
  if (s.transport) {  // asyncio: "SSL doesn't support half-closes"
    throw std::logic_error("write_eof: a TLS stream cannot half-close (TLS 1.2 has no half-close); "
                           "close() it, which sends close_notify");
  }
  s.eof_requested = true;
  if (!s.writer_running) s.end_sending();
}

void Stream::close() {
  detail::stream_state& s = state_of(s_);
  if (s.close_requested) return;
  s.close_requested = true;
  // With a send in flight, the writer closes once everything is sent.
  if (!s.writer_running) s.loop->create_task(detail::stream_state::closer(s_));
}

Task<> Stream::wait_closed() {
  auto keep = s_;
  detail::stream_state& s = state_of(keep);
  if (!s.closed) {
    Future<> closed = s.close_waiters.add(*s.loop);
    co_await closed;
  }
  if (s.write_error) std::rethrow_exception(s.write_error);
}

bool Stream::is_closing() const { return state_of(s_).close_requested; }

namespace {
// peer_address, local_address and set_nodelay are for sockets only.
void check_socket(const std::shared_ptr<detail::stream_state>& s, const char* what) {
  if (s && s->end != detail::stream_end::socket) {
    throw std::logic_error(std::string(what) +
                           ": this Stream is over a pipe (connect_read_pipe or "
                           "connect_write_pipe), which has no address and no TCP options");
  }
}
}  // namespace

Address Stream::peer_address() const {
  check_socket(s_, "peer_address");
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  polyloop::detail::socket_calls& calls = detail::sockets_of(*state_of(s_).loop);
  if (calls.getpeername(fd(), reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    throw_errno(errno, "getpeername");
  }
  return to_address(ss, len);
}

Address Stream::local_address() const {
  check_socket(s_, "local_address");
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  polyloop::detail::socket_calls& calls = detail::sockets_of(*state_of(s_).loop);
  if (calls.getsockname(fd(), reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    throw_errno(errno, "getsockname");
  }
  return to_address(ss, len);
}

void Stream::set_nodelay(bool on) {
  check_socket(s_, "set_nodelay");
  int v = on ? 1 : 0;
  int sock = fd();
  polyloop::detail::socket_calls& calls = detail::sockets_of(*state_of(s_).loop);
  if (calls.setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &v, sizeof v) != 0 && errno != EOPNOTSUPP) {
    throw_errno(errno, "setsockopt(TCP_NODELAY)");
  }
}

int Stream::fd() const {
  const detail::stream_state& s = state_of(s_);
  if (s.fd < 0) throw std::logic_error("the stream is closed");
  return s.fd;
}

// --- connecting -----------------------------------------------------------------

namespace {

// Connects a new non-blocking socket to `addr`; the socket, or throws with
// the errno of connect and `what` naming the peer.
Task<int> connect_socket(int family, const sockaddr* addr, socklen_t len, std::string what) {
  int fd = new_socket(family);
  std::exception_ptr failure;
  int err = 0;
  try {
    co_await async_connect(fd, addr, len);
  } catch (const std::system_error& e) {
    err = e.code().value();
  } catch (...) {
    failure = std::current_exception();  // cancelled
  }
  if (err != 0 || failure) {
    co_await close_quietly(fd);
    if (failure) std::rethrow_exception(failure);
    throw_errno(err, "connect " + what);
  }
  co_return fd;
}

// asyncio's _interleave_addrinfos: the addresses reordered so that families
// alternate, `first_family_count` of the first family going first.
std::vector<AddrInfo> interleave(const std::vector<AddrInfo>& in, int first_family_count) {
  std::vector<std::vector<const AddrInfo*>> by_family;
  for (const AddrInfo& a : in) {
    auto it = std::find_if(by_family.begin(), by_family.end(),
                           [&](const auto& v) { return v.front()->family == a.family; });
    if (it == by_family.end()) {
      by_family.push_back({&a});
    } else {
      it->push_back(&a);
    }
  }
  std::vector<AddrInfo> out;
  std::vector<std::size_t> taken(by_family.size(), 0);
  for (int i = 0; i < first_family_count - 1 && taken[0] < by_family[0].size(); ++i) {
    out.push_back(*by_family[0][taken[0]++]);
  }
  while (out.size() < in.size()) {
    for (std::size_t f = 0; f < by_family.size(); ++f) {
      if (taken[f] < by_family[f].size()) out.push_back(*by_family[f][taken[f]++]);
    }
  }
  return out;
}

// What every address failed with: that error if there was one (or they all
// said the same), else asyncio's "Multiple exceptions: ...".
[[noreturn]] void throw_connect_failures(const std::vector<std::exception_ptr>& errors) {
  std::vector<std::string> messages;
  int first_code = EHOSTUNREACH;
  for (const std::exception_ptr& e : errors) {
    try {
      std::rethrow_exception(e);
    } catch (const std::system_error& se) {
      if (messages.empty()) first_code = se.code().value();
      messages.push_back(se.what());
    } catch (const std::exception& other) {
      messages.push_back(other.what());
    }
  }
  if (errors.size() == 1 ||
      std::all_of(messages.begin(), messages.end(), [&](auto& m) { return m == messages[0]; })) {
    std::rethrow_exception(errors.front());
  }
  std::string all = "Multiple exceptions: ";
  for (std::size_t i = 0; i < messages.size(); ++i) all += (i ? "; " : "") + messages[i];
  throw std::system_error(first_code, std::generic_category(), all);
}

Task<int> connect_to(const AddrInfo& a) {
  sockaddr_storage ss = a.addr;
  co_return co_await connect_socket(a.family, reinterpret_cast<sockaddr*>(&ss), a.addrlen,
                                    a.address().to_string());
}

// One address after another (asyncio without happy_eyeballs_delay).
Task<int> connect_in_turn(const std::vector<AddrInfo>& addrs) {
  std::vector<std::exception_ptr> errors;
  for (const AddrInfo& a : addrs) {
    try {
      co_return co_await connect_to(a);
    } catch (const std::system_error&) {
      errors.push_back(std::current_exception());
    }
  }
  throw_connect_failures(errors);
}

// One attempt of connect_staggered. The socket goes to `*out` as soon as it
// is connected: a task cancelled after its connect completed still ends
// cancelled (as in asyncio), and its result would be lost with the socket.
Task<> connect_into(const AddrInfo& a, int* out) { *out = co_await connect_to(a); }

// Happy eyeballs (RFC 8305, asyncio's staggered_race): the next address is
// tried when the last one failed or has not connected within `delay`; the
// first connection wins and the other attempts are cancelled, and any that
// connected meanwhile closed.
Task<int> connect_staggered(const std::vector<AddrInfo>& addrs, Clock::duration delay) {
  EventLoop& loop = get_running_loop();
  std::vector<Future<>> attempts;
  std::vector<int> fds(addrs.size(), -1);  // sized once: the attempts point into it
  std::vector<bool> seen;
  std::vector<std::exception_ptr> errors;
  std::optional<std::size_t> winner;
  auto start_next = [&] {
    std::size_t i = attempts.size();
    attempts.push_back(loop.create_task(connect_into(addrs[i], &fds[i])));
    seen.push_back(false);
  };
  std::exception_ptr cancelled;
  try {
    start_next();
    while (!winner) {
      std::vector<Future<>> pending;
      for (auto& f : attempts) {
        if (!f.done()) pending.push_back(f);
      }
      bool more = attempts.size() < addrs.size();
      if (pending.empty() && !more) break;
      if (!pending.empty()) {
        std::optional<Clock::duration> limit;
        if (more) limit = delay;
        co_await wait(std::move(pending), FIRST_COMPLETED, limit);
        for (std::size_t i = 0; i < attempts.size() && !winner; ++i) {
          if (seen[i] || !attempts[i].done()) continue;
          seen[i] = true;
          if (!attempts[i].cancelled() && !attempts[i].exception()) {
            winner = i;
          } else {
            errors.push_back(attempts[i].cancelled() ? std::make_exception_ptr(CancelledError())
                                                     : attempts[i].exception());
          }
        }
      }
      // A failure starts the next at once; so does the delay running out.
      if (!winner && attempts.size() < addrs.size()) start_next();
    }
  } catch (const CancelledError&) {
    cancelled = std::current_exception();
  }
  std::vector<Future<>> others;
  for (std::size_t i = 0; i < attempts.size(); ++i) {
    if (winner && i == *winner) continue;
    attempts[i].cancel();
    others.push_back(attempts[i]);
  }
  if (!others.empty()) {
    try {
      co_await wait_all(std::move(others));
    } catch (const CancelledError&) {
      cancelled = std::current_exception();  // they have all ended all the same
    }
  }
  for (std::size_t i = 0; i < attempts.size(); ++i) {
    if (winner && i == *winner && !cancelled) continue;
    if (fds[i] >= 0) co_await close_quietly(fds[i]);  // connected, but too late
    if (attempts[i].done() && !attempts[i].cancelled()) (void)attempts[i].exception();  // retrieved
  }
  if (cancelled) std::rethrow_exception(cancelled);
  if (winner) co_return fds[*winner];
  throw_connect_failures(errors);
}

}  // namespace

Task<Stream> open_connection(std::vector<AddrInfo> addrs, ConnectOptions options) {
  if (addrs.empty()) throw std::invalid_argument("open_connection: the list of addresses is empty");
  int interleave_count = options.interleave.value_or(options.happy_eyeballs_delay ? 1 : 0);
  if (interleave_count > 0) addrs = interleave(addrs, interleave_count);
  int fd = options.happy_eyeballs_delay
               ? co_await connect_staggered(
                     addrs, std::chrono::ceil<Clock::duration>(*options.happy_eyeballs_delay))
               : co_await connect_in_turn(addrs);
  int one = 1;
  // asyncio's default too
  detail::sockets().setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  co_return Stream(fd);
}

Task<Stream> open_connection(std::string host, std::uint16_t port, ConnectOptions options) {
  AddrInfoHints hints;
  hints.socktype = SOCK_STREAM;
  hints.flags = AI_NUMERICSERV;
  std::vector<AddrInfo> addrs = co_await getaddrinfo(host, std::to_string(port), hints);
  if (addrs.empty()) throw_errno(EHOSTUNREACH, "connect " + host + ": no address");
  co_return co_await open_connection(std::move(addrs), options);
}

Task<Stream> open_unix_connection(std::string path) {
  sockaddr_un un = unix_address(path);
  int fd = co_await connect_socket(AF_UNIX, reinterpret_cast<sockaddr*>(&un), sizeof un, path);
  co_return Stream(fd);
}

// --- serving ----------------------------------------------------------------------

namespace detail {

struct server_state : std::enable_shared_from_this<server_state> {
  EventLoop* loop = nullptr;
  int fd = -1;
  ConnectionHandler handler;
  Address address;
  bool closing = false;
  bool reported_exhaustion = false;
  std::size_t active = 0;
  // The accept task, without a reference: a Future here would keep the
  // task's frame alive, and the frame keeps this state alive, so a loop
  // closed with the server open would leak both. The slot clears this when
  // the frame goes.
  polyloop::detail::future_state_base* accept_task = nullptr;
  // It holds the state too (no cycle: the frame holds it anyway): the
  // frame's parameters go in an order of the compiler's, and with a raw
  // pointer the state could go first, when the frame held its last reference
  // (the Server handle gone, then the task cancelled by run()'s shutdown).
  struct task_slot {
    std::shared_ptr<server_state> owner;
    explicit task_slot(std::shared_ptr<server_state> o) : owner(std::move(o)) {}
    task_slot(task_slot&& o) noexcept : owner(std::move(o.owner)) {}
    ~task_slot() {
      if (!owner) return;
      owner->accept_task = nullptr;
      if (!owner->closed) owner->end_unaccepted();
    }
  };
  bool closed = false;
  waiters close_waiters;

  // The accept task ended without closing the socket: cancelled before its
  // first step (close() right after start_server), or its frame destroyed
  // by the loop's close(). Its operations have ended by then, so a plain
  // close(2) is right; the waiters are woken if the loop can still run them.
  void end_unaccepted() noexcept {
    closing = true;
    close_spare();
    if (fd >= 0) detail::sockets_of(*loop).close(std::exchange(fd, -1));
    closed = true;
    if (!loop->is_closed()) close_waiters.wake_all();
  }

  // A descriptor kept open (on /dev/null) for when the process runs out of
  // them: see turn_away_waiting(). -1 if it could not be had.
  int spare = -1;

  static int open_spare() { return ::open("/dev/null", O_RDONLY | O_CLOEXEC); }
  void close_spare() {
    if (spare >= 0) ::close(std::exchange(spare, -1));  // never seen by the backend
  }
  ~server_state() { close_spare(); }

  // Out of descriptors: frees the spare, accepts and closes each client
  // waiting in the backlog, and takes the spare again. True if it made
  // room (the spare was there) and the backlog is now empty (EAGAIN).
  // Synchronous accept4 on the non-blocking listening socket: the backend
  // never sees these fds, and an accept the backend has in flight on the
  // same socket (none: this task's accept has ended) is not disturbed.
  bool turn_away_waiting() {
    if (spare < 0) spare = open_spare();  // a descriptor may have come back
    if (spare < 0) return false;
    close_spare();
    bool drained = false;
    while (true) {
      int c = ::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (c >= 0) {
        ::close(c);
        continue;
      }
      if (errno == EINTR || errno == ECONNABORTED) continue;
      drained = errno == EAGAIN || errno == EWOULDBLOCK;
      break;
    }
    spare = open_spare();
    return drained;
  }

  Task<> wait_closed() {
    if (closed) co_return;
    Future<> f = close_waiters.add(*loop);
    co_await f;
  }

  // An accepted socket until a Stream owns it. Passed by value into
  // handle(), so that the fd is closed if the Stream cannot be made
  // (bad_alloc), if the task's frame cannot be made, or if the task is
  // cancelled before its first step (cancel_all_tasks() right after the
  // accept: its body never runs). The backend has not seen the fd yet, so
  // a plain close(2) is right.
  struct accepted_fd {
    int fd = -1;
    polyloop::detail::socket_calls* calls;  // the loop's: the fd may be simulated
    accepted_fd(int f, polyloop::detail::socket_calls& c) : fd(f), calls(&c) {}
    accepted_fd(accepted_fd&& o) noexcept : fd(std::exchange(o.fd, -1)), calls(o.calls) {}
    accepted_fd& operator=(accepted_fd&&) = delete;
    ~accepted_fd() {
      if (fd >= 0) calls->close(fd);
    }
  };

  static Task<> handle(std::shared_ptr<server_state> s, accepted_fd conn) {
    ++s->active;
    try {
      Stream stream(conn.fd);
      conn.fd = -1;  // the Stream owns it now
      co_await s->handler(stream);
    } catch (const CancelledError&) {
      --s->active;
      throw;
    } catch (...) {
      s->loop->call_exception_handler(
          {"exception in a connection handler of the server on " + s->address.to_string(),
           std::current_exception()});
    }
    --s->active;
  }

  // `slot` is a parameter so that it goes with the frame, run or not.
  static Task<> accept_all(std::shared_ptr<server_state> s, [[maybe_unused]] task_slot slot) {
    // One accept for many connections where the backend has it.
    std::optional<multishot_acceptor> many;
    if (polyloop::detail::loop_access::backend(*s->loop).traits().multishot_accept) {
      many.emplace(*s->loop, s->fd);
    }
    while (!s->closing) {
      int conn = -1;
      int err = 0;
      std::exception_ptr failure;
      try {
        if (many) {
          while (!many->ready()) co_await many->wait();
          conn = many->take();
        } else {
          conn = static_cast<int>(co_await async_accept(s->fd));
        }
      } catch (const CancelledError&) {
        break;
      } catch (const std::system_error& e) {
        err = e.code().value();
        failure = std::current_exception();
      }
      if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
        // Out of descriptors or memory: keep the connections we have, say
        // so once, turn away the clients we cannot take, and try again when
        // descriptors may have been freed.
        if (!s->reported_exhaustion) {
          s->reported_exhaustion = true;
          s->loop->call_exception_handler(
              {"server on " + s->address.to_string() +
                   " cannot accept: out of file descriptors or memory; it keeps serving, closes "
                   "the connections it cannot take, and retries (raise the limit: ulimit -n)",
               failure});
        }
        // libuv's trick: with the spare descriptor given back, the waiting
        // clients are accepted and closed at once, so they see the connection
        // end instead of hanging in the backlog (their handshake completed
        // in the kernel) until descriptors free up. Then accept again at once.
        // Then wait for the next client before accepting again: accept(2)
        // fails with EMFILE before it looks at the backlog, so trying at
        // once would spin.
        bool turned_away = (err == EMFILE || err == ENFILE) && s->turn_away_waiting();
        // Else even that failed (the spare could not be had back): back off.
        bool cancelled = false;
        try {
          if (turned_away) {
            co_await async_poll(s->fd, POLLIN);
          } else {
            co_await sleep(50ms);
          }
        } catch (const CancelledError&) {
          cancelled = true;
        } catch (const std::system_error&) {  // poll failed: accept says why next
        }
        if (cancelled) break;
        continue;
      }
      if (err == ECONNABORTED || err == EPROTO || err == EPERM || err == EINTR) continue;
      if (err != 0) {
        if (!s->closing) {
          s->loop->call_exception_handler(
              {"server on " + s->address.to_string() + " stopped accepting", failure});
        }
        break;
      }
      s->reported_exhaustion = false;
      s->loop->create_task(handle(s, accepted_fd(conn, detail::sockets_of(*s->loop))));
    }
    s->closing = true;
    if (many) {
      // Its memory is this frame's: it must end before the frame does. Fds
      // it accepted meanwhile are closed with it (their clients see the
      // connection end), none is leaked.
      many->cancel();
      co_await many->wait_end();
    }
    s->close_spare();
    if (s->fd >= 0) co_await close_quietly(std::exchange(s->fd, -1));
    s->closed = true;
    s->close_waiters.wake_all();
  }
};

}  // namespace detail

namespace {

std::shared_ptr<detail::server_state> listen_on(ConnectionHandler handler, int fd,
                                                Address address) {
  EventLoop& loop = get_running_loop();
  auto s = std::make_shared<detail::server_state>();
  s->loop = &loop;
  s->fd = fd;
  s->handler = std::move(handler);
  s->address = std::move(address);
  s->spare = detail::server_state::open_spare();  // none is no error: the back-off remains
  Future<> task = loop.create_task(
      detail::server_state::accept_all(s, detail::server_state::task_slot(s)));
  s->accept_task = polyloop::detail::future_access::state(task);
  return s;
}

}  // namespace

void Server::close() {
  for (auto& s : listeners_) {
    if (s->closing) continue;
    s->closing = true;
    if (s->accept_task != nullptr) s->accept_task->cancel();
  }
}

Task<> Server::wait_closed() {
  auto keep = listeners_;
  for (auto& s : keep) co_await s->wait_closed();
}

Task<> Server::serve_forever() {
  if (listeners_.empty()) throw std::logic_error("serve_forever: the Server is empty");
  auto keep = listeners_;
  bool cancelled = false;
  try {
    for (auto& s : keep) co_await s->wait_closed();
  } catch (const CancelledError&) {
    cancelled = true;
  }
  if (cancelled) {
    Server(*this).close();
    throw CancelledError();
  }
}

bool Server::is_serving() const {
  return std::any_of(listeners_.begin(), listeners_.end(), [](auto& s) { return !s->closing; });
}
Address Server::address() const { return listeners_.empty() ? Address{} : listeners_[0]->address; }
std::vector<Address> Server::addresses() const {
  std::vector<Address> out;
  for (auto& s : listeners_) out.push_back(s->address);
  return out;
}
std::uint16_t Server::port() const { return address().port; }
std::size_t Server::active_connections() const {
  std::size_t n = 0;
  for (auto& s : listeners_) n += s->active;
  return n;
}

namespace {

// A listening socket on `a`; -1 if this host has no such family (asyncio
// skips those too: "::" on a host without IPv6).
int listen_socket(const AddrInfo& a, const ServerOptions& options) {
  polyloop::detail::socket_calls& calls = detail::sockets();
  int fd = calls.socket(a.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    if (errno == EAFNOSUPPORT) return -1;
    throw_errno(errno, "socket");
  }
  int one = 1;
  if (options.reuse_address) calls.setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (options.reuse_port &&
      calls.setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
    int err = errno;
    calls.close(fd);
    throw_errno(err, "setsockopt SO_REUSEPORT on " + a.address().to_string());
  }
  // Each family gets its own socket, so "::" must not take IPv4 too.
  if (a.family == AF_INET6) calls.setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (calls.bind(fd, reinterpret_cast<const sockaddr*>(&a.addr), a.addrlen) != 0 ||
      calls.listen(fd, options.backlog) != 0) {
    int err = errno;
    calls.close(fd);  // never seen by the backend
    throw_errno(err, "listen on " + a.address().to_string());
  }
  return fd;
}

void set_port(AddrInfo& a, std::uint16_t port) {
  if (a.family == AF_INET) reinterpret_cast<sockaddr_in*>(&a.addr)->sin_port = htons(port);
  if (a.family == AF_INET6) reinterpret_cast<sockaddr_in6*>(&a.addr)->sin6_port = htons(port);
}

}  // namespace

Task<Server> start_server(ConnectionHandler handler, std::string host, std::uint16_t port,
                          int backlog) {
  ServerOptions options;
  options.backlog = backlog;
  co_return co_await start_server(std::move(handler), std::move(host), port, options);
}

Task<Server> start_server(ConnectionHandler handler, std::string host, std::uint16_t port,
                          ServerOptions options) {
  AddrInfoHints hints;
  hints.socktype = SOCK_STREAM;
  hints.flags = AI_PASSIVE | AI_NUMERICSERV;
  std::vector<AddrInfo> addrs = co_await getaddrinfo(host, std::to_string(port), hints);
  // Port 0 over several addresses: the port the first socket got can be
  // taken on another family by another program before we bind it there;
  // then every socket is closed and the set is bound again on a new port.
  constexpr int port_zero_attempts = 8;
  for (int attempt = 1;; ++attempt) {
    Server server;
    std::uint16_t bound_port = port;
    try {
      for (AddrInfo& a : addrs) {
        // Port 0: the first socket picks a free port and the others take the
        // same, so that one port serves every address (asyncio would give
        // each its own).
        set_port(a, bound_port);
        int fd = listen_socket(a, options);
        if (fd < 0) continue;
        sockaddr_storage ss{};
        socklen_t len = sizeof ss;
        detail::sockets().getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
        Address bound = to_address(ss, len);
        bound_port = bound.port;
        server.listeners_.push_back(listen_on(handler, fd, std::move(bound)));
      }
    } catch (const std::system_error& e) {
      bool port_taken_meanwhile = port == 0 && !server.listeners_.empty() &&
                                  e.code() == std::errc::address_in_use;
      server.close();
      if (port_taken_meanwhile && attempt < port_zero_attempts) continue;
      throw;
    } catch (...) {
      server.close();
      throw;
    }
    if (server.listeners_.empty()) {
      throw_errno(EAFNOSUPPORT, "listen on " + (host.empty() ? std::string("*") : host) +
                                    ": no address of a family this host supports");
    }
    co_return server;
  }
}

Task<Server> start_unix_server(ConnectionHandler handler, std::string path, int backlog) {
  sockaddr_un un = unix_address(path);
  polyloop::detail::socket_calls& calls = detail::sockets();
  struct stat st{};
  // A simulated network has no files: a path there is only a name.
  bool real = &calls == &polyloop::detail::system_socket_calls::instance();
  if (real && ::stat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) {
    ::unlink(path.c_str());  // stale
  }
  int fd = new_socket(AF_UNIX);
  if (calls.bind(fd, reinterpret_cast<sockaddr*>(&un), sizeof un) != 0 ||
      calls.listen(fd, backlog) != 0) {
    int err = errno;
    calls.close(fd);
    throw_errno(err, "listen on " + path);
  }
  Address a;
  a.path = path;
  Server server;
  server.listeners_.push_back(listen_on(std::move(handler), fd, a));
  co_return server;
}

namespace {

// What start_server_from_socket refuses, said as what the socket is.
std::string socket_type_name(int type) {
  switch (type) {
    case SOCK_DGRAM: return "a datagram socket (SOCK_DGRAM)";
    case SOCK_SEQPACKET: return "a SOCK_SEQPACKET socket";
    case SOCK_RAW: return "a raw socket (SOCK_RAW)";
    default: return "a socket of type " + std::to_string(type);
  }
}

}  // namespace

Task<Server> start_server_from_socket(ConnectionHandler handler, int fd, int backlog) {
  const std::string what = "start_server_from_socket(fd " + std::to_string(fd) + ")";
  // The sim backend's sockets are names inside its network, not fds a
  // caller could have made.
  if (&detail::sockets() != &polyloop::detail::system_socket_calls::instance()) {
    throw std::invalid_argument(what + ": the simulated backend has no real sockets; "
                                       "make its servers with start_server");
  }
  struct stat st{};
  if (::fstat(fd, &st) != 0) throw_errno(errno, what);
  if (!S_ISSOCK(st.st_mode)) {
    throw std::invalid_argument(what + ": not a socket; give it a bound TCP or Unix-domain "
                                       "stream socket");
  }
  int type = 0;
  int domain = 0;
  int listening = 0;
  socklen_t len = sizeof type;
  if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0) throw_errno(errno, what);
  len = sizeof domain;
  if (::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0) throw_errno(errno, what);
  len = sizeof listening;
  if (::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0) throw_errno(errno, what);
  if (type != SOCK_STREAM) {
    throw std::invalid_argument(what + ": " + socket_type_name(type) +
                                "; a Server needs a stream socket (SOCK_STREAM)");
  }
  if (domain != AF_INET && domain != AF_INET6 && domain != AF_UNIX) {
    throw std::invalid_argument(what + ": a socket of family " + std::to_string(domain) +
                                "; a Server takes AF_INET, AF_INET6 or AF_UNIX");
  }
  sockaddr_storage ss{};
  socklen_t ss_len = sizeof ss;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &ss_len) == 0) {
    throw std::invalid_argument(what + ": connected to " + to_address(ss, ss_len).to_string() +
                                "; a Server needs a bound socket that is not connected (a "
                                "connected one is a Stream: Stream(fd))");
  }
  ss = {};
  ss_len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &ss_len) != 0) throw_errno(errno, what);
  Address bound = to_address(ss, ss_len);
  bool unbound = domain == AF_UNIX ? bound.path.empty() : bound.port == 0;
  if (!listening && unbound) {
    throw std::invalid_argument(what + ": not bound; bind it to an address first (or let "
                                       "start_server bind one)");
  }
  int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ((flags & O_NONBLOCK) == 0 && ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0)) {
    throw_errno(errno, what + ": making it non-blocking");
  }
  if (!listening && ::listen(fd, backlog) != 0) throw_errno(errno, "listen on " + bound.to_string());
  Server server;
  server.listeners_.push_back(listen_on(std::move(handler), fd, std::move(bound)));
  co_return server;
}

// --- TLS -------------------------------------------------------------------------

namespace {
// Lowers the stream's low-water mark to 0 while start_tls waits for what was
// written to be sent, and puts it back however the wait ends.
struct low_water_zero {
  detail::stream_state& s;
  std::size_t saved;
  explicit low_water_zero(detail::stream_state& st) : s(st), saved(st.low_water) { s.low_water = 0; }
  ~low_water_zero() { s.low_water = saved; }
};
}  // namespace

Task<> Stream::start_tls(TlsOptions options) {
  auto keep = s_;
  detail::stream_state& s = state_of(keep);
  if (s.transport) throw std::logic_error("start_tls: this stream already runs TLS");
  if (s.end != detail::stream_end::socket) {
    throw std::logic_error("start_tls: TLS runs over a socket, and this Stream is one end of a pipe");
  }
  if (s.close_requested || s.fd < 0) throw std::logic_error("start_tls: the stream is closed");
  if (s.eof_requested) throw std::logic_error("start_tls: write_eof() was called on this stream");
  if (s.reading) {
    throw std::logic_error("start_tls: another task is reading this stream; upgrade between reads");
  }
  std::unique_ptr<detail::stream_transport> tls =
      detail::make_tls_transport(options, options.server_hostname);
  {
    low_water_zero all_of_it(s);
    while (s.writer_running || s.buffered_out() > 0) {  // the plain bytes go first
      if (s.write_error) std::rethrow_exception(s.write_error);
      Future<> sent = s.drain_waiters.add(*s.loop);
      s.settle_drainers();
      co_await sent;
    }
  }
  if (s.write_error) std::rethrow_exception(s.write_error);
  {
    read_guard stopping(s);  // no read may start while the multishot receive ends
    co_await s.stop_lending();
  }
  tls->received_before(s.buffered().data(), s.available());
  s.consume(s.available());
  s.transport = std::move(tls);
  s.send_at_once = false;  // write() must not send plain bytes on the socket now
  s.direct_sends = false;  // nor start a send of them: the writer sends through TLS
  s.transport_close_timeout = options.shutdown_timeout;
  read_guard guard(s);  // the handshake reads: nobody else may meanwhile
  bool timed_out = false;
  try {
    co_await wait_for(s.transport->handshake(s), options.handshake_timeout);
  } catch (const TimeoutError&) {
    timed_out = true;
  }
  if (timed_out) {
    throw TlsError("TLS handshake with " + s.peer_name() + " did not complete within " +
                   std::to_string(options.handshake_timeout.count()) +
                   " ms (TlsOptions::handshake_timeout)");
  }
}

const TlsInfo* Stream::tls_info() const {
  const detail::stream_state& s = state_of(s_);
  return s.transport ? s.transport->tls_info() : nullptr;
}

Task<Stream> open_connection(std::string host, std::uint16_t port, TlsOptions tls,
                             ConnectOptions options) {
  if (tls.context.is_server()) {
    throw std::invalid_argument("open_connection: the TlsContext is a server's; use TlsContext::client()");
  }
  if (tls.server_hostname.empty()) tls.server_hostname = host;
  Stream stream = co_await open_connection(std::move(host), port, options);
  std::exception_ptr failure;
  try {
    co_await stream.start_tls(std::move(tls));
  } catch (...) {
    failure = std::current_exception();
  }
  if (failure) {
    stream.close();
    try {
      co_await stream.wait_closed();
    } catch (...) {
    }
    std::rethrow_exception(failure);
  }
  co_return stream;
}

namespace {
// One connection of a TLS server: the handshake, then the user's handler.
Task<> serve_tls(Stream stream, TlsOptions tls, ConnectionHandler handler) {
  bool handshaken = false;
  try {
    co_await stream.start_tls(std::move(tls));
    handshaken = true;
  } catch (const CancelledError&) {
    throw;
  } catch (...) {  // the client's failure: closed, not reported (start_server's comment)
  }
  if (!handshaken) {
    stream.close();
    try {
      co_await stream.wait_closed();
    } catch (...) {
    }
    co_return;
  }
  co_await handler(std::move(stream));
}
}  // namespace

Task<Server> start_server(ConnectionHandler handler, std::string host, std::uint16_t port,
                          TlsOptions tls, int backlog) {
  ServerOptions options;
  options.backlog = backlog;
  co_return co_await start_server(std::move(handler), std::move(host), port, std::move(tls),
                                  options);
}

Task<Server> start_server(ConnectionHandler handler, std::string host, std::uint16_t port,
                          TlsOptions tls, ServerOptions options) {
  if (!tls.context.is_server()) {
    throw std::invalid_argument("start_server: the TlsContext is a client's; use TlsContext::server()");
  }
  ConnectionHandler over_tls = [tls = std::move(tls), handler = std::move(handler)](Stream s) {
    return serve_tls(std::move(s), tls, handler);
  };
  co_return co_await start_server(std::move(over_tls), std::move(host), port, options);
}

}  // namespace polyloop::net
