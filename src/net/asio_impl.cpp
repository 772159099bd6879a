// The one translation unit that compiles Asio (and its SSL support). Every other TU that includes
// Asio sees BOOST_ASIO_SEPARATE_COMPILATION (a PUBLIC define of hub_asio) and only declarations,
// which saves about 1.5 s per Asio TU on our 2-core builds (STYLE.md §8.6).
#include <boost/asio/impl/src.hpp>
#include <boost/asio/ssl/impl/src.hpp>
