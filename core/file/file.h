// File: an open file whose reads, writes, syncs and close never block the
// loop's thread (core/file/file_ops.h: native on io_uring, else the loop's
// default executor). read_file / write_file do the common case in one call.
//
//   pl::File f = co_await pl::File::open("/tmp/data", O_RDWR | O_CREAT);
//   co_await f.write_at(buf, len, 4096);
//   std::string all = co_await f.read_all();
//   co_await f.close();
//
// Errors are std::system_error naming the call and the path, e.g.
// `File::open("/nope"): openat: No such file or directory`. One File is
// used from its loop's thread; operations on it may be awaited by several
// tasks at once (each is independent, at its own offset), but not while it
// is being closed. Moving a File moves the fd; the destructor of a File not
// closed hands close(2) to the running loop's default executor (with no
// loop running on its thread, or the loop closing, it closes at once).
#pragma once

#include <fcntl.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/task/task.h"

namespace polyloop {

class File {
 public:
  // openat(AT_FDCWD, path, flags | O_CLOEXEC, mode) on the running loop.
  static Task<File> open(std::string path, int flags = O_RDONLY, mode_t mode = 0666);

  File() = default;
  File(File&& other) noexcept;
  File& operator=(File&& other) noexcept;
  ~File();

  bool is_open() const noexcept { return fd_ >= 0; }
  int fd() const noexcept { return fd_; }
  const std::string& path() const noexcept { return path_; }

  // One pread of at most `len` bytes at `offset`: the bytes read, 0 at the
  // end of the file. `buf` must stay valid until the task resumes.
  Task<std::size_t> read_at(void* buf, std::size_t len, std::uint64_t offset);
  // Writes all `len` bytes at `offset` (pwrite again after a short write).
  Task<> write_at(const void* buf, std::size_t len, std::uint64_t offset);
  // The whole file, from offset 0 to its end.
  Task<std::string> read_all();
  // The size in bytes (statx).
  Task<std::uint64_t> size();
  Task<> sync();      // fsync
  Task<> datasync();  // fdatasync
  // Closes the fd; the File is then closed (is_open() false). Calling it on
  // a closed File does nothing.
  Task<> close();

 private:
  File(int fd, std::string path) noexcept : fd_(fd), path_(std::move(path)) {}
  int checked_fd(const char* call) const;

  int fd_ = -1;
  std::string path_;
};

// The whole file at `path` (asyncio has no such call; Python's
// pathlib.Path.read_bytes, without blocking the loop).
Task<std::string> read_file(std::string path);
// Creates or truncates `path` (mode 0666 less the umask) and writes `data`
// to it. `data` must stay valid until the task ends.
Task<> write_file(std::string path, std::string_view data);

}  // namespace polyloop
