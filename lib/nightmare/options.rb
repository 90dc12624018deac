# frozen_string_literal: true

require "etc"
require "tmpdir"

module Nightmare
  # The settings of the +nightmare+ directive, checked when the config file
  # is loaded so a typo fails at start (or keeps the old config on HUP)
  # instead of surfacing in the front. Names and defaults follow nginx where
  # nginx has the same knob; sizes take nginx's "16k"/"1m"/"1g" forms and
  # times "500ms"/"30s"/"5m", besides plain Integers (bytes) and Numerics
  # (seconds).
  class Options
    SIZE_UNITS = { "" => 1, "k" => 1024, "m" => 1024**2, "g" => 1024**3 }.freeze
    TIME_UNITS = { "ms" => 0.001, "s" => 1, "m" => 60, "h" => 3600 }.freeze
    MAX_SECONDS = 86_400

    # name => [kind, default, minimum]
    SETTINGS = {
      # Event loop threads in the front, one per core by default: a single
      # loop serves events one after another, and the workers wait for it.
      threads: [:count, -> { Etc.nprocessors }, 1],
      # Whole request head, from the connection's first byte (408 after).
      client_header_timeout: [:time, 60],
      # Longest pause between two reads of a request body (408 after).
      client_body_timeout: [:time, 60],
      # Bytes a second a request body must average once client_body_timeout
      # has passed since it began (408 after), so a byte now and then cannot
      # hold a connection for hours; 0: no minimum.
      client_body_min_rate: [:size, "1k", 0],
      # Longest pause of a client that does not take its response.
      send_timeout: [:time, 60],
      # How long an idle keep-alive connection waits for its next request.
      keepalive_timeout: [:time, 75],
      # Requests served on one client connection before it is closed.
      keepalive_requests: [:count, 1000, 1],
      # How long a switched-protocols tunnel (WebSocket through rack.hijack)
      # may carry nothing either way (nginx's proxy_read_timeout).
      tunnel_timeout: [:time, 60],
      # Larger bodies get 413 without being read; 0 means no limit. Not
      # nginx's 1m: Unicorn alone takes any upload, and adding the front
      # must not break the ones an app already takes; temp_path_max_size
      # guards the disk instead.
      client_max_body_size: [:size, "1g", 0],
      # Bodies up to this size stay in memory, larger ones go to temp_path.
      client_body_buffer_size: [:size, "16k", 0],
      # [count, size]: request line and each header line fit in size (414,
      # 431 beyond), the whole head in count * size (431).
      large_client_header_buffers: [:buffers, [4, "8k"]],
      # More header fields than this get 431.
      client_max_headers: [:count, 100, 1],
      # Where bodies and responses too big for memory wait, in unlinked files.
      temp_path: [:directory, -> { Dir.tmpdir }],
      # Open client connections; past it idle keep-alive ones are closed to
      # make room (as nginx does), and failing that new clients wait in the
      # listen backlog.
      max_connections: [:count, 10_000, 1],
      # Open connections one client address (an IPv6 /64) may hold; its
      # next ones are refused (nginx's limit_conn). "auto": a tenth of
      # max_connections for public addresses, none for private, loopback and
      # link-local ones (load balancers and NAT connect from there). A number
      # counts every address but 127.0.0.1 and ::1 (a local proxy, a load test).
      max_connections_per_address: [:count_or_auto, "auto", 1],
      # Memory per connection for a response the client has not taken yet;
      # more goes to a temp file in temp_path.
      proxy_buffer_size: [:size, "32k", 1024],
      # How much of one response a temp file may hold; beyond it the worker
      # waits for the client (nginx's proxy_max_temp_file_size). 0: no file.
      max_temp_file_size: [:size, "1024m", 0],
      # What all temp files together may hold: past it, responses spool no
      # more (their workers wait for the clients) and request bodies that
      # need a file get 503. "auto": half of temp_path's free space when the
      # front starts; 0: no limit.
      temp_path_max_size: [:size_or_auto, "auto", 0],
      # How long QUIT waits for requests in progress.
      shutdown_timeout: [:time, 30],
      # Requests handed to the workers' accept queue per worker; the rest
      # wait in the front, first come first served (HAProxy's maxconn).
      in_flight_per_worker: [:count, 16, 1],
      # Requests that may wait in the front for a worker; more get 503.
      max_queued_requests: [:count, 1024, 1],
      # How long a request may wait in the front for a worker; 503 after
      # (HAProxy's timeout queue).
      queue_timeout: [:time, 60],
    }.freeze

    attr_reader :values

    # +setting+ is the directive's argument: true, false, or a Hash of
    # settings; a block may set them instead, one call per setting.
    def self.from_directive(setting, &block)
      case setting
      when false, nil then false
      when true then new(block ? Builder.collect(&block) : {})
      when Hash then new(block ? setting.merge(Builder.collect(&block)) : setting)
      else
        raise ArgumentError, "nightmare=#{setting.inspect}: use true, false, or a Hash of settings " \
                             "(known: #{SETTINGS.keys.join(', ')})"
      end
    end

    # +try_files+ (a Nightmare::TryFiles) comes from its own directive.
    def initialize(given, try_files: nil)
      @given = given
      @try_files = try_files
      unknown = given.keys.map(&:to_sym) - SETTINGS.keys
      unless unknown.empty?
        raise ArgumentError, "nightmare: unknown setting #{unknown.map(&:inspect).join(', ')} " \
                             "(known: #{SETTINGS.keys.join(', ')})"
      end
      given = given.transform_keys(&:to_sym)
      @values = SETTINGS.each_with_object({}) do |(name, (kind, default, minimum)), values|
        value = given.key?(name) ? given[name] : default
        value = value.call if value.respond_to?(:call)
        values[name] = __send__(:"check_#{kind}", name, value, minimum)
      end
      @values[:try_files] = try_files&.to_native
      @values.freeze
      freeze
    end

    # The same settings, with the static files the front serves.
    def with_try_files(try_files)
      Options.new(@given, try_files: try_files)
    end

    def [](name)
      @values.fetch(name)
    end

    def ==(other)
      other.is_a?(Options) && other.values == values
    end

    # What Nightmare::Native::Front.start takes.
    def to_native
      @values.dup
    end

    private

    def check_count(name, value, minimum)
      Integer === value or raise ArgumentError, "not an integer: nightmare #{name}=#{value.inspect}"
      value >= minimum or raise ArgumentError, "too low (< #{minimum}): nightmare #{name}=#{value.inspect}"
      value
    end

    def check_size(name, value, minimum)
      bytes = case value
              when Integer then value
              when /\A(\d+)([kmg]?)\z/i then Integer($1, 10) * SIZE_UNITS.fetch($2.downcase)
              end
      bytes or raise ArgumentError, "not a size: nightmare #{name}=#{value.inspect} " \
                                    '(give bytes as an Integer, or a String like "512k", "10m", "1g")'
      bytes >= minimum or raise ArgumentError, "too low (< #{minimum} bytes): nightmare #{name}=#{value.inspect}"
      bytes
    end

    # nil stands for "auto", which the front works out from max_connections.
    def check_count_or_auto(name, value, minimum)
      value == "auto" ? nil : check_count(name, value, minimum)
    rescue ArgumentError => e
      raise ArgumentError, "#{e.message} (or \"auto\")"
    end

    # nil stands for "auto", which the front works out when it starts.
    def check_size_or_auto(name, value, minimum)
      value == "auto" ? nil : check_size(name, value, minimum)
    rescue ArgumentError
      raise ArgumentError, "not a size or \"auto\": nightmare #{name}=#{value.inspect} " \
                           '(give bytes as an Integer, a String like "512k", "10m", "1g", or "auto")'
    end

    def check_time(name, value, _minimum)
      seconds = case value
                when Numeric then value.to_f
                when /\A(\d+(?:\.\d+)?)(ms|s|m|h)\z/ then Float($1) * TIME_UNITS.fetch($2)
                end
      seconds or raise ArgumentError, "not a time: nightmare #{name}=#{value.inspect} " \
                                      '(give seconds as a Number, or a String like "500ms", "30s", "5m")'
      seconds.positive? or raise ArgumentError, "must be positive: nightmare #{name}=#{value.inspect}"
      # Longer than a day is a mistake (Float::INFINITY, 1e19), and the
      # front's deadlines are instants that must not overflow.
      seconds <= MAX_SECONDS or
        raise ArgumentError, "too long (> 1 day, #{MAX_SECONDS}s): nightmare #{name}=#{value.inspect}"
      seconds
    end

    def check_buffers(name, value, _minimum)
      unless Array === value && value.size == 2
        raise ArgumentError, "nightmare #{name}=#{value.inspect}: give [count, size], like [4, \"8k\"]"
      end
      [check_count(name, value[0], 1), check_size(name, value[1], 256)]
    end

    def check_directory(name, value, _minimum)
      String === value or raise ArgumentError, "not a path: nightmare #{name}=#{value.inspect}"
      path = File.expand_path(value)
      File.directory?(path) && File.writable?(path) or
        raise ArgumentError, "nightmare #{name}=#{value.inspect} is not a writable directory"
      path
    end

    # Collects settings from the block form:
    #   nightmare do
    #     client_max_body_size "10m"
    #     threads 2
    #   end
    class Builder < BasicObject
      def self.collect(&block)
        builder = new
        builder.instance_eval(&block)
        builder.__settings
      end

      def initialize
        @settings = {}
      end

      def __settings
        @settings
      end

      SETTINGS.each_key do |name|
        define_method(name) { |value| @settings[name] = value }
      end

      def method_missing(name, *)
        ::Kernel.raise ::ArgumentError, "nightmare: unknown setting #{name.inspect} " \
                                        "(known: #{SETTINGS.keys.join(', ')})"
      end

      def respond_to_missing?(*) = false
    end
  end
end
