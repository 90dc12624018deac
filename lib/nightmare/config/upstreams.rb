# frozen_string_literal: true

module Nightmare
  # What the +upstream+, +backup+ and +map+ directives say: the servers the
  # front sends requests to besides (or, standalone, instead of) the
  # master's own workers, each with nginx's server options, and the groups
  # of servers that requests for some Host names go to. Addresses are
  # checked (names resolved) when the config is loaded, so a typo stops
  # the start, or keeps the running config on HUP.
  class Upstreams
    # name => default, as nginx's `server` parameters.
    OPTIONS = {
      # Requests in flight to the server at most; 0: no cap. A Unicorn
      # takes about as many as it has workers without making any wait.
      max_conns: 0,
      # Failures within fail_timeout that take the server out of use for
      # fail_timeout; 0: never.
      max_fails: 1,
      # 0: failures never take it out of use (the nginx failover recipe's
      # fail_timeout=0: always try the primary first).
      fail_timeout: 10,
      # Requests start with a PROXY protocol v2 header carrying the client's
      # address; the remote Unicorn reads it on a listener marked
      # `proxy_protocol: true` (see Nightmare::ProxyProtocolListener).
      proxy_protocol: false,
    }.freeze

    Server = Struct.new(:address, :backup, :options) do
      def to_native = { address: address, backup: backup, **options }
    end

    attr_reader :primaries, :backups, :routes

    def initialize
      @primaries = []
      @backups = []
      @routes = []
    end

    def add_primaries(directive, addresses, options)
      @primaries.concat(servers(directive, addresses, options, backup: false))
    end

    def add_backups(directive, addresses, options)
      @backups.concat(servers(directive, addresses, options, backup: true))
    end

    # +routes+: { "host" or "*.domain" => address or [addresses] }.
    def add_routes(routes, options)
      Hash === routes && !routes.empty? or
        raise ArgumentError, 'map: give Host names and their servers, like map "admin.example.com" => ["10.0.0.9:8080"]'
      routes.each do |pattern, addresses|
        String === pattern or raise ArgumentError, "map: #{pattern.inspect} is not a host name"
        Nightmare::Native.check_host_pattern(pattern)
        @routes << [pattern.downcase, servers("map #{pattern.inspect}", Array(addresses), options, backup: false)]
      end
    end

    def empty? = @primaries.empty? && @backups.empty? && @routes.empty?

    def default_servers = @primaries + @backups

    def to_native
      { servers: default_servers.map(&:to_native),
        routes: @routes.map { |pattern, list| [pattern, list.map(&:to_native)] } }
    end

    def ==(other)
      other.is_a?(Upstreams) && other.to_native == to_native
    end

    private

    def servers(directive, addresses, options, backup:)
      addresses = addresses.flatten
      addresses.empty? and raise ArgumentError, "#{directive}: give at least one address"
      options = check_options(directive, options)
      addresses.map do |address|
        String === address or raise ArgumentError, "#{directive}: #{address.inspect} is not an address " \
                                                   '(give "host:port" or "unix:/path")'
        Nightmare::Native.resolve_upstream(address)
        Server.new(address.dup.freeze, backup, options)
      end
    end

    def check_options(directive, options)
      unknown = options.keys - OPTIONS.keys
      unless unknown.empty?
        raise ArgumentError, "#{directive}: unknown option #{unknown.map(&:inspect).join(', ')} " \
                             "(known: #{OPTIONS.keys.join(', ')})"
      end
      OPTIONS.to_h do |name, default|
        value = options.fetch(name, default)
        [name, check_option(directive, name, value)]
      end.freeze
    end

    # 0 is a setting of its own (never out of use), written as nginx
    # writes it or as a number.
    def zero_time?(value)
      value == 0 || (value.is_a?(String) && value.match?(/\A0+(?:\.0+)?(?:ms|s|m|h)?\z/))
    end

    def check_option(directive, name, value)
      case name
      when :max_conns, :max_fails
        Integer === value && value >= 0 or
          raise ArgumentError, "#{directive} #{name}=#{value.inspect}: give a count (0 or more)"
        value
      when :fail_timeout
        seconds = zero_time?(value) ? 0.0 : Nightmare::Native.read_time("#{directive} fail_timeout", value)
        seconds.to_f
      when :proxy_protocol
        [true, false].include?(value) or
          raise ArgumentError, "#{directive} proxy_protocol=#{value.inspect}: give true or false"
        value
      end
    end
  end
end
