// An intrusive FIFO of operations, linked through operation::next: how a
// backend queues the operations it holds, without allocating.
#pragma once

#include "core/backend/backend.h"

namespace polyloop::detail {

struct op_list {
  operation* head = nullptr;
  operation* tail = nullptr;

  void push(operation* op) noexcept {
    op->next = nullptr;
    (tail != nullptr ? tail->next : head) = op;
    tail = op;
  }
  operation* pop() noexcept {
    operation* op = head;
    if (op != nullptr) {
      head = op->next;
      if (head == nullptr) tail = nullptr;
      op->next = nullptr;
    }
    return op;
  }
  // O(length): lists are short (one fd's waiters), and removal is a cancel.
  bool remove(operation* op) noexcept {
    operation* prev = nullptr;
    for (operation* o = head; o != nullptr; prev = o, o = o->next) {
      if (o != op) continue;
      (prev != nullptr ? prev->next : head) = o->next;
      if (tail == o) tail = prev;
      o->next = nullptr;
      return true;
    }
    return false;
  }
  // Hands every operation, in order, to the loop's ready queue (what a
  // backend finished outside its wait). Returns whether there was any.
  bool move_to(ready_queue& ready) {
    bool any = head != nullptr;
    while (operation* op = pop()) ready.push(op);
    return any;
  }
};

}  // namespace polyloop::detail
