// The loop's ready queue: a FIFO ring of intrusive nodes.
//
// Anything that can become ready (a scheduled callback, a completed backend
// operation, a coroutine waiting to resume) embeds a ready_node, so pushing
// allocates nothing once the ring has grown to the loop's working size.
// Single-threaded: only the loop's thread touches it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace polyloop::detail {

struct ready_node {
  enum class action : std::uint8_t { run, discard };
  // run: do the work. discard: the loop is closing and the node will never
  // run; release whatever it owns.
  void (*fn)(ready_node* self, action what) = nullptr;
};

class ready_queue {
 public:
  ready_queue() { grow(); }
  ready_queue(const ready_queue&) = delete;
  ready_queue& operator=(const ready_queue&) = delete;
  ~ready_queue() { discard_all(); }

  bool empty() const noexcept { return tail_ == head_; }
  std::size_t size() const noexcept { return static_cast<std::size_t>(tail_ - head_); }
  // Nodes popped since the queue was made: the loop derives its callback
  // count from it instead of counting each callback (LoopStats::callbacks_run).
  std::uint64_t popped() const noexcept { return head_; }

  bool full() const noexcept { return size() == capacity_; }

  void push(ready_node* node) {
    make_room();
    push_into_room(node);
  }
  void make_room() {
    if (full()) grow();
  }
  // push() when !full(): the caller checked, so the push calls nothing.
  void push_into_room(ready_node* node) noexcept {
    slots_[tail_ & mask_] = node;
    ++tail_;
  }

  // The next node pop() returns, left in place (the queue is not empty).
  ready_node* front() const noexcept { return slots_[head_ & mask_]; }
  // pop() without reading the node: after front().
  void drop_front() noexcept { ++head_; }

  ready_node* pop() noexcept {
    ready_node* node = slots_[head_ & mask_];
    ++head_;
    return node;
  }

  // Releases every node without running it (loop close); returns how many.
  std::size_t discard_all() noexcept {
    std::size_t discarded = 0;
    for (; !empty(); ++discarded) {
      ready_node* node = pop();
      node->fn(node, ready_node::action::discard);
    }
    return discarded;
  }

 private:
  [[gnu::noinline]] void grow() {
    std::size_t new_capacity = capacity_ == 0 ? 256 : capacity_ * 2;
    std::size_t new_mask = new_capacity - 1;
    // Not zero-filled: every slot is written before it is read.
    auto slots = std::make_unique_for_overwrite<ready_node*[]>(new_capacity);
    for (std::uint64_t i = head_; i != tail_; ++i) slots[i & new_mask] = slots_[i & mask_];
    slots_ = std::move(slots);
    capacity_ = new_capacity;
    mask_ = new_mask;
  }

  std::unique_ptr<ready_node*[]> slots_;
  std::size_t capacity_ = 0;  // always a power of two
  std::size_t mask_ = 0;      // capacity_ - 1
  // Positions that only grow (a slot is position & mask_): head_ is the next
  // to pop and counts the pops, tail_ the next to push; size is the difference.
  std::uint64_t head_ = 0;
  std::uint64_t tail_ = 0;
};

}  // namespace polyloop::detail
