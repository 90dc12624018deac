# frozen_string_literal: true

require "ipaddr"
require_relative "preamble_acceptor"

module Nightmare
  # A Unicorn on another host, behind a standalone front (or a front's
  # backup), reads the real client's address on a listener marked for it:
  #
  #   require "nightmare"
  #   listen "10.0.0.2:8080", proxy_protocol: true, proxy_protocol_from: ["10.0.0.1"]
  #
  # Every connection must come from a front listed in proxy_protocol_from
  # (addresses or networks) and open with a PROXY protocol v2 header, which
  # sets REMOTE_ADDR; a stranger's connection is dropped unanswered, so no
  # one else can claim an address. Works without `nightmare` on.
  class ProxyProtocolAcceptor < PreambleAcceptor
    def initialize(listener, allowed, logger)
      super(listener, Nightmare::Native::PreambleReader.new(nil), logger)
      @allowed = allowed
      # The same few fronts connect again and again: each is judged once
      # (strangers every time, so they cannot fill the memo).
      @fronts_seen = {}
    end

    private

    def admitted?(peer)
      return true if listed?(peer)

      @logger.warn "nightmare: dropped a connection #{source(peer)}to #{listener_name}: " \
                   "not an address of proxy_protocol_from"
      false
    end

    def listener_name = "a proxy_protocol listener"

    def source(peer) = "from #{peer} "

    def listed?(peer)
      return false unless peer
      return true if @fronts_seen.key?(peer)

      address = IPAddr.new(peer)
      # An IPv6 listener sees IPv4 fronts as ::ffff:a.b.c.d.
      candidates = [address, address.native]
      @allowed.any? { |range| candidates.any? { |candidate| range.include?(candidate) } } &&
        (@fronts_seen[peer] = true)
    rescue IPAddr::InvalidAddressError
      false
    end
  end

  # Checks a listener's proxy_protocol options when the config is loaded.
  module ProxyProtocolOptions
    module_function

    # The listener's allowed fronts as IPAddr ranges, or nil when it is not
    # marked proxy_protocol; raises ArgumentError naming what is wrong.
    def allowed(address, options)
      return unless options[:proxy_protocol]

      Nightmare::UnicornFlavor.check!
      options[:proxy_protocol] == true or
        raise ArgumentError, "listen #{address} proxy_protocol=#{options[:proxy_protocol].inspect}: give true"
      if address.start_with?("/")
        raise ArgumentError, "listen #{address} proxy_protocol: only for TCP listeners, which fronts on other " \
                             "hosts reach (requests from this host's own front come another way)"
      end
      from = Array(options[:proxy_protocol_from])
      if from.empty?
        raise ArgumentError, "listen #{address} proxy_protocol: true needs proxy_protocol_from, the fronts' " \
                             "addresses (like [\"10.0.0.1\"]): a stranger could otherwise claim any client address"
      end
      from.map do |range|
        IPAddr.new(range)
      rescue IPAddr::Error, TypeError
        raise ArgumentError, "listen #{address} proxy_protocol_from: #{range.inspect} is not an address or network"
      end
    end
  end

  # Worker side: listeners marked proxy_protocol are accepted through a
  # ProxyProtocolAcceptor. Prepended only when a config has such a listener.
  module ProxyProtocolListeners
    private

    def init_worker_process(worker)
      # Unicorn forgets the listeners' options in the worker (super does).
      marked = Unicorn::HttpServer::LISTENERS.to_h do |io|
        [io, ProxyProtocolOptions.allowed(sock_name(io), listener_opts.fetch(sock_name(io), {}))]
      end
      # In place: Unicorn's QUIT trap empties this very array to stop the worker.
      super.map! do |io|
        allowed = marked[io]
        allowed ? ProxyProtocolAcceptor.new(io, allowed, logger) : io
      end
    end
  end
end
