# frozen_string_literal: true

module Nightmare
  # The two ways a Unicorn worker takes a client and reads it, told apart
  # by what the loaded Unicorn does, never by its version (rubygems.org's
  # unicorn 6.1.0 uses kgio, Debian 13's identically numbered snapshot does
  # not):
  #
  # - kgio (Unicorn up to 6.0): `kgio_tryaccept` gives a client,
  #   `HttpRequest#read(socket)` reads it with `kgio_read!` and takes
  #   REMOTE_ADDR from its `kgio_addr`;
  # - plain sockets (upstream's git after 6.1.0): `accept_nonblock(exception:
  #   false)` gives `[client, addrinfo]`, `HttpRequest#read_headers(socket,
  #   addrinfo)` reads with `readpartial` and takes REMOTE_ADDR from the
  #   addrinfo.
  #
  # The gem's acceptors and client speak both. Another Unicorn is refused
  # when `nightmare` is turned on, with a message, rather than left to spin
  # its workers on an error.
  module UnicornFlavor
    module_function

    def name
      if request_method_arity(:read_headers) == 2 && process_client_arity == 2
        :sockets
      elsif request_method_arity(:read) == 1 && process_client_arity == 1 && defined?(::Kgio::Socket)
        :kgio
      end
    end

    def kgio? = name == :kgio

    # Raises ArgumentError (what Unicorn's config directives raise) naming
    # what this Unicorn does that the gem does not know.
    def check!
      return if name

      raise ArgumentError,
            "nightmare: this Unicorn (#{Unicorn::Const::UNICORN_VERSION}, #{Unicorn.method(:builder).source_location&.first}) " \
            "reads requests in a way the gem does not know: HttpServer#process_client takes " \
            "#{process_client_arity.inspect} arguments and HttpRequest has neither #read(socket) with kgio nor " \
            "#read_headers(socket, addrinfo); the gem drives Unicorn 5 and 6.0 (kgio) and 6.1 without kgio"
    end

    def process_client_arity
      Unicorn::HttpServer.instance_method(:process_client).arity
    rescue NameError
      nil
    end

    def request_method_arity(name)
      Unicorn::HttpRequest.instance_method(name).arity
    rescue NameError
      nil
    end
  end
end
