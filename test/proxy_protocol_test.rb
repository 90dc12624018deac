# frozen_string_literal: true

require_relative "test_helper"
$LOAD_PATH.unshift(File.join(ROOT, "lib"))
require "nightmare"
require "logger"
require "stringio"

# A listener marked proxy_protocol as a worker accepts on it, on real
# sockets: the preamble a front sends, and who may send one. (Fronts on
# other hosts, end to end, are in standalone_test.rb.)
class ProxyProtocolTest < Minitest::Test
  def setup
    @log = StringIO.new
    # Dual-stack, as `listen "[::]:8080"`: IPv4 peers arrive as ::ffff:a.b.c.d.
    @listener = TCPServer.new("::", 0)
  rescue Errno::EAFNOSUPPORT, Errno::EADDRNOTAVAIL => e
    skip "no IPv6 here to listen on [::] (#{e.class}); the dual-stack case cannot be shown"
  end

  def teardown
    @socket&.close
    @listener&.close
  end

  def test_a_listed_ipv4_front_on_an_ipv6_listener_passes_on_its_clients_address
    acceptor = acceptor_allowing("127.0.0.0/8")
    client, address = connect_and_accept(acceptor, preamble("203.0.113.7", 4242) + "GET / HTTP/1.0\r\n\r\n")
    refute_nil client, "the front's connection is accepted (log: #{@log.string})"
    assert_equal "203.0.113.7", address.ip_address, "what Unicorn without kgio reads REMOTE_ADDR from"
    assert_equal "203.0.113.7", client.kgio_addr, "and Unicorn with kgio" if client.respond_to?(:kgio_addr)
    assert_equal "GET / HTTP/1.0\r\n\r\n", client.readpartial(100), "the request follows the preamble"
  ensure
    client&.close
  end

  # Unicorn with kgio asks #kgio_tryaccept (a client or nil), Unicorn 6.1
  # without it #accept_nonblock(exception: false); both get the same.
  def test_both_unicorns_ways_of_accepting_are_answered
    acceptor = acceptor_allowing("127.0.0.0/8")
    assert_equal :wait_readable, acceptor.accept_nonblock(exception: false), "nothing waiting"
    assert_nil acceptor.kgio_tryaccept
    client = connect_and_accept(acceptor, preamble("198.51.100.2", 80) + "GET /x HTTP/1.0\r\n\r\n", kgio: true)
    assert_instance_of Nightmare::HandedOffClient, client
    assert_equal "GET /x HTTP/1.0\r\n\r\n", client.readpartial(100)
  ensure
    client&.close
  end

  def test_a_connection_from_an_address_not_listed_is_dropped_and_said_so
    acceptor = acceptor_allowing("10.0.0.1")
    refused = connect_and_accept(acceptor, preamble("203.0.113.7", 4242) + "GET / HTTP/1.0\r\n\r\n")
    assert_equal :wait_readable, refused
    assert_match(/dropped a connection from 127\.0\.0\.1 to a proxy_protocol listener: not an address of/,
                 @log.string)
  end

  def test_a_listed_front_without_a_preamble_is_dropped_and_said_so
    acceptor = acceptor_allowing("127.0.0.1")
    assert_nil connect_and_accept(acceptor, "GET / HTTP/1.0\r\n\r\n#{' ' * 80}", kgio: true)
    assert_match(/dropped a connection from 127\.0\.0\.1 to a proxy_protocol listener: no PROXY protocol v2/,
                 @log.string)
  end

  private

  def acceptor_allowing(range)
    Nightmare::ProxyProtocolAcceptor.new(@listener, [IPAddr.new(range)], Logger.new(@log))
  end

  # Connects from 127.0.0.1, sends +bytes+, and accepts as a worker of
  # Unicorn 6.1 would ([client, address], or :wait_readable), or with
  # +kgio+ as one of Unicorn 6.0 (a client, or nil).
  def connect_and_accept(acceptor, bytes, kgio: false)
    @socket = TCPSocket.new("127.0.0.1", @listener.local_address.ip_port)
    @socket.write(bytes)
    IO.select([@listener], nil, nil, 5) or flunk "no connection to accept"
    kgio ? acceptor.kgio_tryaccept : acceptor.accept_nonblock(exception: false)
  end

  # The preamble a front sends a remote listener (lengths as the front
  # writes them: always room for an IPv6 address and a secret, padded).
  def preamble(client_ip, client_port)
    addresses = IPAddr.new(client_ip).hton + IPAddr.new("127.0.0.1").hton + [client_port, 8080].pack("nn")
    padding = 71 - 16 - addresses.bytesize - 3
    "\r\n\r\n\0\r\nQUIT\n".b + [0x21, 0x11, 71 - 16].pack("CCn") + addresses + [0x04, padding].pack("Cn") +
      ("\0" * padding)
  end
end
