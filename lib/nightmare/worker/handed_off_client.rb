# frozen_string_literal: true

require "socket"

module Nightmare
  # The base a handed-off client needs for this Unicorn: a Kgio::Socket
  # where Unicorn reads with kgio, a plain Socket where it does not.
  HandedOffClientBase = defined?(::Kgio::Socket) ? ::Kgio::Socket : ::Socket
  private_constant :HandedOffClientBase

  # A connection from the front as a worker accepts it. The acceptor reads
  # the preamble and, in the same read, the start of the request (the front
  # sends both at once); the first read Unicorn makes is answered from those
  # bytes instead of asking the kernel again, whichever read it is: kgio's
  # (Unicorn 6.0) or readpartial (Unicorn 6.1 without kgio).
  class HandedOffClient < HandedOffClientBase
    # The request bytes read along with the preamble, or nil.
    attr_writer :request_start

    def readpartial(length, buffer = nil)
      @request_start ? take_request_start(length, buffer) : super
    end

    if method_defined?(:kgio_read!)
      def kgio_read!(length, buffer = nil)
        @request_start ? take_request_start(length, buffer) : super
      end

      def kgio_read(length, buffer = nil)
        @request_start ? take_request_start(length, buffer) : super
      end

      def kgio_tryread(length, buffer = nil)
        @request_start ? take_request_start(length, buffer) : super
      end
    end

    private

    def take_request_start(length, buffer)
      taken = @request_start
      if taken.bytesize > length
        @request_start = taken.byteslice(length..)
        taken = taken.byteslice(0, length)
      else
        @request_start = nil
      end
      buffer ? buffer.replace(taken) : taken
    end
  end

  # What Unicorn 6.1's loop takes REMOTE_ADDR from (its read_headers asks
  # #unix? and #ip_address). Not an IP socket's address as Addrinfo would
  # say (#ip? is false): the socket is the front's UNIX connection, and
  # check_client_connection must not read TCP_INFO from it.
  ClientAddress = Struct.new(:ip_address) do
    def unix? = false
    def ip? = false
    def inspect = "#<Nightmare::ClientAddress #{ip_address}>"
  end
end
