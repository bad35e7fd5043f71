// cogrid/impl/metrics.ipp — definitions for cogrid/metrics.hpp.
#ifndef COGRID_IMPL_METRICS_IPP
#define COGRID_IMPL_METRICS_IPP

#include <cogrid/metrics.hpp>

#include <cstdio>

namespace cogrid {
namespace detail {

// A label value with Prometheus's escapes (backslash, double quote, newline).
inline void prom_label(std::string& out, std::string_view v) {
  for (char ch : v) {
    if (ch == '\\') out += "\\\\";
    else if (ch == '"') out += "\\\"";
    else if (ch == '\n') out += "\\n";
    else out += ch;
  }
}

inline void prom_number(std::string& out, double v) {
  char buf[32];
  const int n = std::snprintf(buf, sizeof buf, "%.17g", v);
  out.append(buf, static_cast<std::size_t>(n));
}

inline void prom_header(std::string& out, const char* name, const char* type, const char* help) {
  out += "# HELP ";
  out += name;
  out += ' ';
  out += help;
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

} // namespace detail

COGRID_DECL std::string render_prometheus(std::string_view node, const std::vector<connection_stats>& connections,
                                          const std::vector<handler_stats>& handlers) {
  using detail::prom_header;
  using detail::prom_label;
  using detail::prom_number;
  std::string out;
  auto conn_series = [&](const char* name, const connection_stats& c, double v, std::string_view extra = {}) {
    out += name;
    out += "{node=\"";
    prom_label(out, node);
    out += "\",remote=\"";
    prom_label(out, c.remote);
    out += '"';
    out += extra;
    out += "} ";
    prom_number(out, v);
    out += '\n';
  };
  struct conn_metric {
    const char* name;
    const char* type;
    const char* help;
    double (*get)(const connection_stats&);
  };
  static const conn_metric conn_metrics[] = {
      {"cogrid_connection_up", "gauge", "1 when the connection to the remote is connected.",
       [](const connection_stats& c) { return c.state == connection_state::connected ? 1.0 : 0.0; }},
      {"cogrid_connection_connects_total", "counter", "Sessions established.",
       [](const connection_stats& c) { return static_cast<double>(c.connects); }},
      {"cogrid_connection_reconnects_total", "counter", "Sessions established after the first.",
       [](const connection_stats& c) { return static_cast<double>(c.reconnects); }},
      {"cogrid_connection_remote_restarts_total", "counter", "Reconnects to a remote whose node id had changed.",
       [](const connection_stats& c) { return static_cast<double>(c.remote_restarts); }},
      {"cogrid_connection_dial_failures_total", "counter", "Failed dial attempts.",
       [](const connection_stats& c) { return static_cast<double>(c.dial_failures); }},
      {"cogrid_connection_messages_sent_total", "counter", "Grid messages sent.",
       [](const connection_stats& c) { return static_cast<double>(c.messages_out); }},
      {"cogrid_connection_messages_received_total", "counter", "Grid messages received.",
       [](const connection_stats& c) { return static_cast<double>(c.messages_in); }},
      {"cogrid_connection_sent_bytes_total", "counter", "WebSocket payload bytes sent.",
       [](const connection_stats& c) { return static_cast<double>(c.bytes_out); }},
      {"cogrid_connection_received_bytes_total", "counter", "WebSocket payload bytes received.",
       [](const connection_stats& c) { return static_cast<double>(c.bytes_in); }},
      {"cogrid_connection_socket_writes_total", "counter", "Transport writes (one per merged batch).",
       [](const connection_stats& c) { return static_cast<double>(c.socket_writes); }},
      {"cogrid_connection_calls_made_total", "counter", "Unary calls and streams started from here.",
       [](const connection_stats& c) { return static_cast<double>(c.calls_made); }},
      {"cogrid_connection_calls_served_total", "counter", "Unary calls and streams the remote started here.",
       [](const connection_stats& c) { return static_cast<double>(c.calls_served); }},
      {"cogrid_connection_queue_full_total", "counter", "Sends refused because the outgoing queue was full.",
       [](const connection_stats& c) { return static_cast<double>(c.queue_full); }},
      {"cogrid_connection_protocol_errors_total", "counter", "Sessions ended by a malformed message or frame.",
       [](const connection_stats& c) { return static_cast<double>(c.protocol_errors); }},
      {"cogrid_connection_pings_sent_total", "counter", "Connection pings sent.",
       [](const connection_stats& c) { return static_cast<double>(c.pings_sent); }},
      {"cogrid_connection_pongs_received_total", "counter", "Answers to connection pings received.",
       [](const connection_stats& c) { return static_cast<double>(c.pongs_received); }},
      {"cogrid_connection_queue_length", "gauge", "Messages waiting to be written.",
       [](const connection_stats& c) { return static_cast<double>(c.queue_length); }},
      {"cogrid_connection_open_calls", "gauge", "Open unary calls (direction=out: made here, in: served here).", nullptr},
      {"cogrid_connection_open_streams", "gauge", "Open streams (direction=out: opened here, in: served here).", nullptr},
      {"cogrid_connection_rtt_seconds", "gauge", "Round-trip time of the last connection ping.",
       [](const connection_stats& c) { return static_cast<double>(c.last_ping_rtt.count()) / 1e6; }},
      {"cogrid_connection_max_rtt_seconds", "gauge", "Round-trip time of the slowest connection ping.",
       [](const connection_stats& c) { return static_cast<double>(c.max_ping_rtt.count()) / 1e6; }},
  };
  for (const auto& m : conn_metrics) {
    prom_header(out, m.name, m.type, m.help);
    for (const auto& c : connections) {
      if (m.get) {
        conn_series(m.name, c, m.get(c));
      } else if (std::string_view(m.name) == "cogrid_connection_open_calls") {
        conn_series(m.name, c, static_cast<double>(c.calls_out), ",direction=\"out\"");
        conn_series(m.name, c, static_cast<double>(c.calls_in), ",direction=\"in\"");
      } else {
        conn_series(m.name, c, static_cast<double>(c.streams_out), ",direction=\"out\"");
        conn_series(m.name, c, static_cast<double>(c.streams_in), ",direction=\"in\"");
      }
    }
  }

  auto labels = [&](const handler_stats& h) {
    std::string l = "{node=\"";
    prom_label(l, node);
    l += "\",handler=\"" + std::to_string(static_cast<unsigned>(h.handler)) + "\",subroute=\"";
    prom_label(l, h.subroute);
    l += "\",kind=\"";
    l += to_string(h.kind);
    l += "\",side=\"";
    l += to_string(h.side);
    l += '"';
    return l;
  };
  struct handler_metric {
    const char* name;
    const char* type;
    const char* help;
    double (*get)(const handler_stats&);
  };
  static const handler_metric handler_metrics[] = {
      {"cogrid_handler_calls_total", "counter", "Calls and streams started.",
       [](const handler_stats& h) { return static_cast<double>(h.calls); }},
      {"cogrid_handler_errors_total", "counter", "Calls and streams that ended with an error.",
       [](const handler_stats& h) { return static_cast<double>(h.errors); }},
      {"cogrid_handler_in_flight", "gauge", "Calls and streams running now.",
       [](const handler_stats& h) { return static_cast<double>(h.in_flight); }},
      {"cogrid_handler_received_bytes_total", "counter", "Payload bytes received.",
       [](const handler_stats& h) { return static_cast<double>(h.bytes_in); }},
      {"cogrid_handler_sent_bytes_total", "counter", "Payload bytes sent.",
       [](const handler_stats& h) { return static_cast<double>(h.bytes_out); }},
  };
  for (const auto& m : handler_metrics) {
    prom_header(out, m.name, m.type, m.help);
    for (const auto& h : handlers) {
      out += m.name;
      out += labels(h);
      out += "} ";
      prom_number(out, m.get(h));
      out += '\n';
    }
  }
  prom_header(out, "cogrid_handler_duration_seconds", "histogram", "Durations of calls and streams that ended.");
  for (const auto& h : handlers) {
    const std::string l = labels(h);
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < h.latency.counts.size(); ++i) {
      cumulative += h.latency.counts[i];
      out += "cogrid_handler_duration_seconds_bucket" + l + ",le=\"";
      if (i < latency_histogram::bounds_us.size()) prom_number(out, static_cast<double>(latency_histogram::bounds_us[i]) / 1e6);
      else out += "+Inf";
      out += "\"} " + std::to_string(cumulative) + '\n';
    }
    out += "cogrid_handler_duration_seconds_sum" + l + "} ";
    prom_number(out, static_cast<double>(h.latency.sum.count()) / 1e6);
    out += "\ncogrid_handler_duration_seconds_count" + l + "} " + std::to_string(h.latency.count) + '\n';
  }
  return out;
}

} // namespace cogrid

#endif // COGRID_IMPL_METRICS_IPP
