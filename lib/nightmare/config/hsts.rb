# frozen_string_literal: true

module Nightmare
  # The +hsts+ directive: the Strict-Transport-Security header the front
  # adds to every HTTPS response whose app did not set one (and to the
  # static files it serves over HTTPS). Browsers then go to HTTPS by
  # themselves for +max_age+.
  #
  #   hsts max_age: "365d"
  #   hsts max_age: "2y", include_subdomains: true, preload: true
  class Hsts
    UNITS = { "s" => 1, "m" => 60, "h" => 3600, "d" => 86_400, "w" => 604_800, "y" => 31_536_000 }.freeze

    attr_reader :value

    def initialize(max_age:, include_subdomains: false, preload: false)
      seconds = self.class.seconds(max_age)
      [[:include_subdomains, include_subdomains], [:preload, preload]].each do |name, flag|
        next if [true, false].include?(flag)

        raise ArgumentError, "hsts #{name}: #{flag.inspect} is not true or false"
      end
      if preload && (!include_subdomains || seconds < UNITS["y"])
        raise ArgumentError, "hsts preload: the preload list takes include_subdomains: true and a max_age of " \
                             "at least a year (hstspreload.org); add them or drop preload"
      end
      @value = ["max-age=#{seconds}", ("includeSubDomains" if include_subdomains), ("preload" if preload)]
               .compact.join("; ").freeze
      freeze
    end

    # Seconds from an Integer or "30d"-style text (s, m, h, d, w, y).
    def self.seconds(max_age)
      return max_age if max_age.is_a?(Integer) && max_age >= 0

      match = /\A(\d+)([smhdwy]?)\z/.match(max_age.to_s.strip)
      unless max_age.is_a?(String) && match
        raise ArgumentError, "hsts max_age: #{max_age.inspect} is not a time; give seconds or \"365d\"-style text " \
                             "(s, m, h, d, w, y)"
      end
      Integer(match[1], 10) * UNITS.fetch(match[2], 1)
    end

    def ==(other) = other.is_a?(Hsts) && other.value == value
    alias eql? ==

    def hash = value.hash
  end
end
