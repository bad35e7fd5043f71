// Wraps README's TLS fragment: statements on a manager's options, with the PEM texts and keys it names.
#include <cogrid/cogrid.hpp>

#include <string>
// @includes

void configure(cogrid::manager_options& o, const std::string& cert_chain_pem, const std::string& private_key_pem,
               const std::string& cluster_ca_pem, const std::string& access_key, const std::string& secret_key) {
  // @snippet
}
