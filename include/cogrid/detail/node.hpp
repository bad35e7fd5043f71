// cogrid/detail/node.hpp — a node's life (dialing and accepting connections, running their sessions,
// shutting down) behind one interface, implemented by the class template node_impl (impl/node.ipp and
// the files it names). A manager's constructor instantiates it; every other entry point of a manager or a
// connection goes through the interface. So a file that only declares, serves and calls handlers compiles
// none of it, whichever of cogrid's headers it includes, and separately compiled builds compile it once
// (src.hpp).
#ifndef COGRID_DETAIL_NODE_HPP
#define COGRID_DETAIL_NODE_HPP

#include <cogrid/result.hpp>

#include <asio/awaitable.hpp>
#include <asio/ip/tcp.hpp>

#include <cstddef>
#include <memory>
#include <string_view>
#include <vector>

namespace cogrid {
class connection;
class transport;
struct process_spec;
struct upgrade_request;
struct node_id;
struct message;
namespace detail {

struct manager_state;
struct session;
template <class>
class basic_ws_stream;
using ws_stream = basic_ws_stream<void>;

/// What a node does beyond declaring, serving and calling handlers.
struct node_ops {
  // A connection's life.
  virtual void start(connection& c) const = 0;
  virtual void kill(connection& c) const = 0;
  virtual void attach(connection& c, std::unique_ptr<transport> t) const = 0;
  virtual void attach_process(connection& c, const std::shared_ptr<manager_state>& st,
                              std::shared_ptr<const process_spec> spec) const = 0;
  virtual asio::awaitable<void> shutdown(connection& c) const = 0;
  // A manager's listeners and incoming connections.
  virtual void listen(const std::shared_ptr<manager_state>& st, asio::ip::tcp::acceptor a) const = 0;
  virtual result<void> listen(const std::shared_ptr<manager_state>& st) const = 0;
  virtual void accept(const std::shared_ptr<manager_state>& st, asio::ip::tcp::socket s) const = 0;
  virtual void accept(const std::shared_ptr<manager_state>& st, asio::ip::tcp::socket s, upgrade_request r,
                      std::vector<std::byte> leftover) const = 0;
  virtual void accept(const std::shared_ptr<manager_state>& st, std::unique_ptr<transport> t) const = 0;
  virtual asio::awaitable<void> shutdown(std::shared_ptr<manager_state> st) const = 0;

protected:
  ~node_ops() = default;
};

template <class Tag>
struct node_impl;

/// The node implementation (one static instance per instantiation).
template <class Tag = void>
const node_ops& node_of();

} // namespace detail
} // namespace cogrid

#endif // COGRID_DETAIL_NODE_HPP
